"""What a person sees, checked in a real browser (headless Chromium driven by Selenium): the HTML report of the tiny run,
and a paper notebook run through JupyterLab's own interface. Screenshots land in runs/browser/."""
import os, shutil, socket, subprocess, sys, time, uuid
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / 'runs' / 'browser'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=(
    "headless Chromium and chromedriver are not installed and this machine has no apt-get to install them "
    "(make setup installs Debian's chromium and chromium-driver where apt-get exists)"))


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1400,1000',
              '--allow-file-access-from-files'):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_page_load_timeout(120)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try: yield d
    finally: d.quit()


def images(d):
    "Every <img> of the page: (src, loaded), loaded meaning the browser decoded a picture."
    return d.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")


def test_report_renders_with_its_tables_and_figures(tiny_run, browser):
    browser.get((tiny_run / 'report.html').as_uri())
    text = browser.find_element('tag name', 'body').text
    assert 'reproduction report' in text and 'Claims expected at each paper' in text
    headers = browser.execute_script("return Array.from(document.querySelectorAll('th')).map(t => t.textContent)")
    assert 'invariants' in headers and 'verdict' in headers, headers              # the summary and the claims tables
    imgs = images(browser)
    family = [src for src, ok in imgs if src.startswith('family-')]
    assert family, 'the report shows no family figure'
    assert all(ok for src, ok in imgs), [src for src, ok in imgs if not ok]      # every figure (family and paper) loaded
    browser.save_screenshot(str(SHOTS / 'report.png'))


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait_for(fn, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v: return v
        time.sleep(0.5)
    pytest.fail(f'timed out after {timeout} s waiting for {what}')


NOTEBOOK = 'nbs/301_steering_vectors.ipynb'   # a paper notebook that draws figures and runs in ~30 s at its tiny defaults


def test_a_paper_notebook_runs_through_the_jupyterlab_ui(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ, 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'rt'), 'JUPYTER_CONFIG_DIR': str(tmp_path / 'cfg'),
           'LLM_LAB_PROGRESS': '0'}
    work = tmp_path / 'lab'; shutil.copytree(ROOT / 'nbs', work / 'nbs')              # the UI saves the notebook: use a copy
    os.symlink(ROOT / 'papers', work / 'papers')
    srv = subprocess.Popen([str(Path(sys.executable).parent / 'jupyter'), 'lab', '--ip', '127.0.0.1', '--port', str(port),
                            '--no-browser', '--allow-root', f'--IdentityProvider.token={token}', '--notebook-dir', str(work)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**env, 'LLM_LAB_ROOT': str(ROOT)})
    try:
        def up():
            try: return socket.create_connection(('127.0.0.1', port), timeout=1) and True
            except OSError: return False
        wait_for(up, 60, 'the JupyterLab server')
        browser.get(f'http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}')
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '.jp-Notebook .jp-Cell'), 90, 'the notebook to render')
        wait_for(lambda: 'Idle' in browser.find_element(By.TAG_NAME, 'body').text or
                 browser.find_elements(By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator[data-status="idle"]'), 90, 'an idle kernel')
        # the first cells, one by one with Shift+Enter, as a reader does
        browser.find_elements(By.CSS_SELECTOR, '.jp-Notebook .jp-Cell')[0].click()
        for _ in range(4): browser.switch_to.active_element.send_keys(Keys.SHIFT, Keys.ENTER); time.sleep(0.3)
        wait_for(lambda: [p for p in browser.find_elements(By.CSS_SELECTOR, '.jp-InputPrompt') if p.text.strip() == '[1]:'], 120,
                 'the first cell to run')
        # then the rest through the Run menu
        next(m for m in browser.find_elements(By.CSS_SELECTOR, '.lm-MenuBar-itemLabel') if m.text == 'Run').click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'li[data-command="runmenu:run-all"]'), 10, 'the Run menu')
        browser.find_element(By.CSS_SELECTOR, 'li[data-command="runmenu:run-all"]').click()
        figure = lambda: [ok for src, ok in images(browser) if src and src.startswith('data:image/png') and ok]
        wait_for(figure, 600, 'a matplotlib figure in the notebook')
        done = lambda: not [p for p in browser.find_elements(By.CSS_SELECTOR, '.jp-InputPrompt') if p.text.strip() == '[*]:']
        wait_for(done, 600, 'every cell to finish')
        errors = browser.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
        assert not errors, errors[0].text[:2000]
        browser.execute_script("Array.from(document.images).find(i => (i.getAttribute('src') || '').startsWith('data:image/png')).scrollIntoView()")
        time.sleep(1)
        browser.save_screenshot(str(SHOTS / 'jupyterlab.png'))
    finally:
        srv.terminate()
        try: srv.wait(timeout=20)
        except subprocess.TimeoutExpired: srv.kill()
