"""The package's shape: no import cycles, no private name taken from another module, notebooks import only from lower
numbers, and a plain `pip install .` (no dev extras) imports every module."""
import ast, json, os, re, subprocess, sys, venv
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'llm_lab'


def modules() -> dict[str, Path]:
    "Every module of the package by dotted name (a package's __init__ under the package's name)."
    out = {}
    for f in PKG.rglob('*.py'):
        if f.name == '_modidx.py': continue
        parts = list(f.relative_to(ROOT).with_suffix('').parts)
        if parts[-1] == '__init__': parts.pop()
        out['.'.join(parts)] = f
    return out


def imports(name: str, path: Path):
    "(target module, imported name or None) for every llm_lab import in a module, function-level (lazy) imports included."
    is_pkg = path.name == '__init__.py'
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.') if is_pkg else name.split('.')[:-1]
                base = base[:len(base) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else: mod = node.module or ''
            if mod.split('.')[0] != 'llm_lab': continue
            for a in node.names: yield mod, a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split('.')[0] == 'llm_lab': yield a.name, None


def resolve(mod: str, attr: str | None, mods: dict) -> str:
    "The module an import lands in: `from pkg import sub` names the submodule; otherwise the longest existing prefix."
    if attr and f'{mod}.{attr}' in mods: return f'{mod}.{attr}'
    while mod not in mods and '.' in mod: mod = mod.rsplit('.', 1)[0]
    return mod


def test_no_import_cycles_and_no_private_imports():
    mods = modules()
    edges, private = {m: set() for m in mods}, []
    for name, path in mods.items():
        for mod, attr in imports(name, path):
            dst = resolve(mod, attr, mods)
            if dst == name or dst.startswith(name + '.'): continue      # a package re-exporting its own submodules
            edges[name].add(dst)
            if attr and attr.startswith('_') and not attr.startswith('__'): private.append(f'{name} imports {dst}.{attr}')
    assert not private, private
    state, cycles = {}, []
    def visit(n, stack):
        state[n] = 'open'
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 'open': cycles.append(stack[stack.index(m):] + [m])
            elif m not in state: visit(m, stack + [m])
        state[n] = 'done'
    for n in sorted(mods):
        if n not in state: visit(n, [n])
    assert not cycles, [' -> '.join(c) for c in cycles]
    assert len(edges) > 30   # the walk saw the package


def notebook_key(name: str) -> tuple:
    m = re.match(r'^(\d+)([a-z]?)_', name)
    return (int(m.group(1)), m.group(2))


def test_notebooks_import_only_from_lower_numbers():
    exported, sources = {}, {}
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        cells = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
        sources[nb.name] = cells
        for c in cells:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', c, re.M)
            if m: exported['llm_lab.' + m.group(1).removesuffix('.__init__')] = nb.name
    assert 'llm_lab.arch' in exported and 'llm_lab.train' in exported
    bad = []
    for nb, cells in sources.items():
        for c in cells:
            for m in re.finditer(r'^\s*(?:from\s+(llm_lab[\w.]*)\s+import\s+([\w, ()]+)|import\s+(llm_lab[\w.]*))', c, re.M):
                mod = m.group(1) or m.group(3)
                names = [n.strip() for n in (m.group(2) or '').strip('()').split(',') if n.strip()]
                for target in ([f'{mod}.{n}' for n in names if f'{mod}.{n}' in exported] or [mod]):
                    while target not in exported and '.' in target: target = target.rsplit('.', 1)[0]
                    src = exported.get(target)
                    if src and src != nb and notebook_key(src) >= notebook_key(nb): bad.append(f'{nb} imports {target} ({src})')
    assert not bad, bad


def test_paper_notebooks_never_export():
    hits = []
    for nb in sorted((ROOT / 'nbs').glob('[1-8]*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            if c['cell_type'] == 'code' and re.search(r'^[^#]*nbdev_export\(', ''.join(c['source']), re.M): hits.append(nb.name)
    assert not hits, hits


def requirements(key: str) -> list[str]:
    text = (ROOT / 'settings.ini').read_text()
    return re.search(rf'^{key}\s*=\s*(.*)$', text, re.M).group(1).split()


@pytest.mark.skipif(os.environ.get('LLM_LAB_SKIP_INSTALL_TEST') == '1', reason='LLM_LAB_SKIP_INSTALL_TEST=1')
def test_plain_install_imports_every_module(tmp_path):
    "A fresh virtualenv, `pip install .` with the runtime requirements only (torch pinned to the lab's CPU build), then import all."
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir / 'bin' / 'python'
    torch_pin = next(l.strip() for l in (ROOT / 'requirements.txt').read_text().splitlines() if l.startswith('torch=='))
    r = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', str(ROOT), torch_pin],
                       capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    names = sorted(modules())
    code = ('import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n    try: importlib.import_module(m)\n'
            '    except Exception as e: bad.append(f"{m}: {type(e).__name__}: {e}")\nprint("\\n".join(bad)); sys.exit(1 if bad else 0)')
    r = subprocess.run([str(py), '-c', code, *names], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, 'LLM_LAB_ROOT': str(ROOT)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dev = subprocess.run([str(py), '-m', 'pip', 'list', '--format=freeze'], capture_output=True, text=True).stdout.lower()
    assert 'lm-eval' not in dev and 'lm_eval' not in dev, 'the plain install pulled a dev requirement'
