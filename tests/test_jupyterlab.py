"The lab in JupyterLab: the server starts, a paper notebook opens in a session, and its kernel runs lab code."
import json, os, socket, subprocess, sys, time, uuid
from pathlib import Path
import urllib.request
import pytest

BIN = Path(sys.executable).parent


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def api(url, token, method='GET', body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={'Authorization': f'token {token}', 'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as r: return r.status, r.read()


def execute(port, token, kernel_id, code, timeout=120):
    "Run code in a kernel through the server's websocket channel; return its stdout."
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect
    async def go():
        ws = await websocket_connect(f'ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}')
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({'header': {'msg_id': msg_id, 'msg_type': 'execute_request', 'username': 't',
                                                'session': uuid.uuid4().hex, 'version': '5.3'},
                                     'parent_header': {}, 'metadata': {}, 'channel': 'shell',
                                     'content': {'code': code, 'silent': False, 'store_history': False,
                                                 'user_expressions': {}, 'allow_stdin': False}}))
        out, t0 = [], time.time()
        while time.time() - t0 < timeout:
            m = json.loads(await ws.read_message())
            if m.get('parent_header', {}).get('msg_id') != msg_id: continue
            if m['msg_type'] == 'stream': out.append(m['content']['text'])
            if m['msg_type'] == 'error': raise RuntimeError('\n'.join(m['content']['traceback']))
            if m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle': break
        ws.close(); return ''.join(out)
    return IOLoop.current().run_sync(go, timeout=timeout + 10)


def test_notebook_opens_and_runs_in_jupyterlab(root, tmp_path):
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ, 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'rt'), 'JUPYTER_CONFIG_DIR': str(tmp_path / 'cfg')}
    srv = subprocess.Popen([str(BIN / 'jupyter'), 'lab', '--ip', '127.0.0.1', '--port', str(port), '--no-browser',
                            '--allow-root', f'--IdentityProvider.token={token}', '--notebook-dir', str(root)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(120):
            try:
                if api(f'http://127.0.0.1:{port}/api/status', token)[0] == 200: break
            except OSError: time.sleep(0.5)
        else: pytest.fail('JupyterLab did not start')
        status, page = api(f'http://127.0.0.1:{port}/lab', token)
        assert status == 200 and b'JupyterLab' in page
        status, body = api(f'http://127.0.0.1:{port}/api/contents/nbs/201_kivi.ipynb', token)
        assert status == 200 and json.loads(body)['type'] == 'notebook'
        status, body = api(f'http://127.0.0.1:{port}/api/sessions', token, 'POST',
                           {'path': 'nbs/201_kivi.ipynb', 'type': 'notebook', 'kernel': {'name': 'python3'}})
        assert status == 201
        kernel = json.loads(body)['kernel']['id']
        out = execute(port, token, kernel, 'import sys, llm_lab\nfrom llm_lab.kv import KIVICache\n'
                                           'from llm_lab.models import tiny_llama\nm, t = tiny_llama()\n'
                                           'o = m.generate(t("hi", return_tensors="pt").input_ids, max_new_tokens=5, past_key_values=KIVICache(2, 8, 16))\n'
                                           'print("OK", o.shape[1], sys.executable)')
        line = next((l for l in out.splitlines() if l.startswith('OK')), out)
        assert line.startswith('OK 7'), out
        assert line.split()[2].startswith(str(BIN.parent)), f'the notebook kernel is not the project environment: {out}'
        assert 'IProgress not found' not in out, 'progress bars would not render in JupyterLab (ipywidgets missing)'
    finally:
        srv.terminate()
        try: srv.wait(timeout=20)
        except subprocess.TimeoutExpired: srv.kill()
