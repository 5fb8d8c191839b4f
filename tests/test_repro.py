"The papermill runner: every paper at the tiny scale, skipping, failure rows, determinism."
import json, os, time, shutil
from pathlib import Path
import pytest
from llm_lab.repro import run_papers, collect_run, list_papers, write_report, load_paper
from llm_lab.core import Recorder

TIMING_PREFIXES = ('speed_',)  # wall-clock measurements: the only metrics allowed to differ between runs
WORKERS = 2  # notebooks at once in the tiny run (measured: 4 papers 240 s -> 143 s; all 16 about 970 s -> 643-712 s)


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "Every registered paper, run once at the tiny scale (the CI reproducibility check)."
    runs = tmp_path_factory.mktemp('runs')
    t0 = time.perf_counter()
    run_dir = run_papers(scale='tiny', run_name='ci', runs_dir=runs, workers=WORKERS)
    return run_dir, time.perf_counter() - t0


def test_every_paper_runs_at_tiny_scale(tiny_run):
    run_dir, wall = tiny_run
    entries = collect_run(run_dir)
    assert {e['id'] for e in entries} == {p.id for p in list_papers()}
    for e in entries:
        assert e['status']['status'] == 'ok', e['status'].get('error')
        assert (run_dir / e['id'] / 'notebook.ipynb').exists()
        assert e['metrics'], 'no metrics recorded'
        for f in e['figures']: assert (run_dir / e['id'] / f).exists()
        for row in e['claims']:
            assert row['verdict'] in ('reproduced', 'not reproduced'), (row['id'], row['verdict'])
    report = (run_dir / 'report.md').read_text()
    for p in list_papers():
        for c in p.claims: assert c.id in report
    assert (run_dir / 'report.html').read_text().startswith('<!doctype html>')
    print(f'tiny run of {len(entries)} paper(s): {wall:.0f} s')


def test_kivi_tiny_under_two_minutes(tiny_run):
    run_dir, _ = tiny_run
    st = json.loads((run_dir / 'kivi' / 'status.json').read_text())
    assert st['wall_s'] < 120, f"kivi at tiny took {st['wall_s']} s"


def test_rerun_skips_finished_papers(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / 'kivi' / 'status.json').read_text()
    t0 = time.perf_counter()
    run_papers(['kivi'], scale='tiny', run_name=run_dir.name, runs_dir=run_dir.parent)
    assert time.perf_counter() - t0 < 30
    assert (run_dir / 'kivi' / 'status.json').read_text() == before


def test_same_seed_same_metrics(tiny_run, tmp_path):
    "Determinism: a second run with the same seed and parameters records the same numbers."
    run_dir, _ = tiny_run
    pid = 'steering_vectors'  # seeded random controls, and the cheapest paper to run twice
    second = run_papers([pid], scale='tiny', run_name='again', runs_dir=tmp_path, workers=WORKERS)  # same threads per kernel
    a = json.loads((run_dir / pid / 'metrics.json').read_text())['metrics']
    b = json.loads((second / pid / 'metrics.json').read_text())['metrics']
    assert a.keys() == b.keys()
    differ = {k: (a[k], b[k]) for k in a if not k.startswith(TIMING_PREFIXES) and a[k] != b[k]}
    assert not differ, differ


def test_a_failing_notebook_is_a_row_and_the_others_run(tmp_path, monkeypatch, root):
    "A fake lab with one paper that raises and one that works."
    lab = tmp_path / 'lab'; (lab / 'nbs').mkdir(parents=True); (lab / 'settings.ini').write_text('[DEFAULT]\n')
    import nbformat
    def paper(pid, code):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("scale = 'tiny'\nseed = 0\nout_dir = None"); params.metadata['tags'] = ['parameters']
        nb.cells = [params, nbformat.v4.new_code_cell(code)]
        nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
        nbformat.write(nb, lab / 'nbs' / f'{pid}.ipynb')
        (lab / 'papers' / pid).mkdir(parents=True)
        (lab / 'papers' / pid / 'paper.yaml').write_text(
            f"id: {pid}\ntitle: {pid}\nauthors: [x]\nyear: 2024\nurl: http://x\nnotebook: nbs/{pid}.ipynb\n"
            f"scales: {{tiny: {{}}}}\nclaims:\n  - {{id: c1, text: t, check: 'acc > 0.5', paper_value: 0.9}}\n")
    paper('bad', "raise ValueError('this paper is broken')")
    paper('good', "from llm_lab.core import Recorder\nRecorder(out_dir).log(acc=0.75)")
    monkeypatch.setenv('LLM_LAB_ROOT', str(lab))
    omp = os.environ.get('OMP_NUM_THREADS')
    run_dir = run_papers(scale='tiny', run_name='mixed', runs_dir=tmp_path / 'runs', workers=2)
    assert os.environ.get('OMP_NUM_THREADS') == omp  # the kernels' thread setting does not leak into the caller
    entries = {e['id']: e for e in collect_run(run_dir)}
    assert entries['bad']['status']['status'] == 'failed'
    assert 'this paper is broken' in entries['bad']['status']['error']
    assert entries['good']['status']['status'] == 'ok'
    assert entries['good']['claims'][0]['verdict'] == 'reproduced'
    report = (run_dir / 'report.md').read_text()
    assert 'this paper is broken' in report and '[good](#good) | ok' in report


def test_workers_must_be_a_positive_integer():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match='workers'): run_papers(['kivi'], scale='tiny', workers=bad)
