"""The papermill runner: every paper at the tiny scale (its invariants must hold), run identity (skip the same, refuse
another), overrides, failure rows, determinism, and papers run on another architecture."""
import json, os, shutil
from pathlib import Path
import pytest
from llm_lab.repro import run_papers, collect_run, list_papers, write_report, compare_runs, RunIdentityError
from llm_lab.claims import VERDICTS

WORKERS = 2  # notebooks at once in the tiny run (each kernel gets cpu_count // 2 threads)


def test_every_paper_runs_at_tiny_scale_and_its_invariants_hold(tiny_run):
    entries = collect_run(tiny_run)
    assert {e['id'] for e in entries} == {p.id for p in list_papers()}
    broken, unjudged = [], []
    for e in entries:
        assert e['status']['status'] == 'ok', (e['id'], e['status'].get('error'))
        assert (tiny_run / e['id'] / 'notebook.ipynb').exists() and e['metrics'], e['id']
        for f in e['figures']: assert (tiny_run / e['id'] / f).exists()
        for r in e['claims']:
            assert r['verdict'] in VERDICTS or not r['expected'], (e['id'], r['id'], r['verdict'])   # an expected claim is judged
            if r['kind'] == 'invariant' and r['verdict'] != 'reproduced': broken.append((e['id'], r['id'], r['verdict'], r['ours']))
        assert json.loads((tiny_run / e['id'] / 'metrics.json').read_text())['run']['paper_yaml_sha256']
    assert not broken, f"invariants that do not hold at tiny: {broken}"
    report = (tiny_run / 'report.md').read_text()
    for p in list_papers():
        for c in p.claims: assert c.id in report
    assert sum(e['summary']['invariant']['total'] for e in entries) >= len(entries)   # every paper states its invariants
    assert (tiny_run / 'report.html').read_text().startswith('<!doctype html>')


def test_rerun_with_the_same_identity_skips(tiny_run):
    before = (tiny_run / 'kivi' / 'status.json').read_text()
    run_papers(['kivi'], scale='tiny', run_name=tiny_run.name, runs_dir=tiny_run.parent)
    assert (tiny_run / 'kivi' / 'status.json').read_text() == before


def test_rerun_with_another_identity_refuses(tiny_run):
    before = (tiny_run / 'kivi' / 'status.json').read_text()
    with pytest.raises(RunIdentityError, match="model: 'smollm2-135m-instruct' -> 'tiny-llama'"):
        run_papers(['kivi'], scale='tiny', run_name=tiny_run.name, runs_dir=tiny_run.parent, model='tiny-llama')
    with pytest.raises(RunIdentityError, match='seed: 0 -> 1'):
        run_papers(['kivi', 'dpo'], scale='tiny', run_name=tiny_run.name, runs_dir=tiny_run.parent, seed=1)
    assert (tiny_run / 'kivi' / 'status.json').read_text() == before


DETERMINISM_PAPERS = ['steering_vectors', 'speculative_sampling', 'wanda_sparsegpt']   # seeded controls, sampling, calibration


def test_same_seed_same_metrics(tiny_run, tmp_path):
    "Determinism: a second run with the same seed and parameters records the same non-timing numbers."
    second = run_papers(DETERMINISM_PAPERS, scale='tiny', run_name='again', runs_dir=tmp_path, workers=WORKERS)
    diff = compare_runs(tiny_run, second, DETERMINISM_PAPERS)
    assert set(diff) == set(DETERMINISM_PAPERS)
    assert not any(diff.values()), diff


def fake_lab(tmp_path, monkeypatch, papers: dict):
    "A lab folder with one notebook per `papers[id] = (code, claims yaml)`; the parameters cell has `k = 1`."
    import nbformat
    lab = tmp_path / 'lab'; (lab / 'nbs').mkdir(parents=True); (lab / 'settings.ini').write_text('[DEFAULT]\n')
    for pid, (code, claims) in papers.items():
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("scale = 'tiny'\nseed = 0\nout_dir = None\nmodel = 'tiny-llama'\nk = 1")
        params.metadata['tags'] = ['parameters']
        nb.cells = [params, nbformat.v4.new_code_cell(code)]
        nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
        nbformat.write(nb, lab / 'nbs' / f'{pid}.ipynb')
        (lab / 'papers' / pid).mkdir(parents=True)
        (lab / 'papers' / pid / 'paper.yaml').write_text(
            f"id: {pid}\ntitle: {pid}\nauthors: [x]\nyear: 2024\nurl: http://x\nnotebook: nbs/{pid}.ipynb\n"
            f"scales: {{tiny: {{}}}}\nclaims:\n{claims}")
    monkeypatch.setenv('LLM_LAB_ROOT', str(lab))
    return lab


def test_a_failing_notebook_is_a_row_and_the_others_run(tmp_path, monkeypatch):
    fake_lab(tmp_path, monkeypatch, {
        'bad': ("raise ValueError('this paper is broken')", "  - {id: c1, text: t, check: 'acc > 0.5', paper_value: 0.9}\n"),
        'good': ("from llm_lab.core import Recorder\nRecorder(out_dir).log(acc=0.75)",
                 "  - {id: c1, text: t, check: 'acc > 0.5', paper_value: 0.9}\n  - {id: inv, kind: invariant, text: t, check: 'acc < 1'}\n")})
    omp = os.environ.get('OMP_NUM_THREADS')
    run_dir = run_papers(scale='tiny', run_name='mixed', runs_dir=tmp_path / 'runs', workers=2)
    assert os.environ.get('OMP_NUM_THREADS') == omp  # the kernels' thread setting does not leak into the caller
    entries = {e['id']: e for e in collect_run(run_dir)}
    assert entries['bad']['status']['status'] == 'failed' and 'this paper is broken' in entries['bad']['status']['error']
    assert [r['verdict'] for r in entries['bad']['claims']] == ['not run']                 # its claims stay, as not run
    assert entries['bad']['summary']['paper'] == dict(entries['bad']['summary']['paper'], total=1, **{'not run': 1})
    assert [r['verdict'] for r in entries['good']['claims']] == ['reproduced', 'reproduced']
    report = (run_dir / 'report.md').read_text()
    assert 'this paper is broken' in report and '[good](#good) | ok' in report
    assert 'invariants 1/1, paper claims 1/2 (1 not run)' in report


def test_overrides_reach_the_notebook_and_the_identity(tmp_path, monkeypatch):
    fake_lab(tmp_path, monkeypatch, {'p': ("from llm_lab.core import Recorder\nRecorder(out_dir).log(k=k)", "  - {id: c, text: t, check: 'k > 2'}\n")})
    run_dir = run_papers(['p'], scale='tiny', run_name='o', runs_dir=tmp_path / 'runs', overrides={'k': 3})
    e = collect_run(run_dir)[0]
    assert e['metrics']['k'] == 3 and e['identity']['overrides'] == {'k': 3} and e['claims'][0]['verdict'] == 'reproduced'
    with pytest.raises(RunIdentityError, match=r"overrides: \{'k': 3\} -> \{\}"):
        run_papers(['p'], scale='tiny', run_name='o', runs_dir=tmp_path / 'runs')
    with pytest.raises(ValueError, match="no notebook parameter named \\['kk'\\]"):
        run_papers(['p'], scale='tiny', run_name='o2', runs_dir=tmp_path / 'runs', overrides={'kk': 3})


def test_report_judges_with_the_claims_stored_at_run_time(tmp_path, monkeypatch):
    lab = fake_lab(tmp_path, monkeypatch, {'p': ("from llm_lab.core import Recorder\nRecorder(out_dir).log(acc=0.6)", "  - {id: c, text: t, check: 'acc > 0.5'}\n")})
    run_dir = run_papers(['p'], scale='tiny', run_name='s', runs_dir=tmp_path / 'runs')
    y = lab / 'papers' / 'p' / 'paper.yaml'; y.write_text(y.read_text().replace('acc > 0.5', 'acc > 0.9'))   # a stricter bar, after the run
    e = collect_run(run_dir)[0]
    assert e['claims'][0]['verdict'] == 'reproduced' and e['paper_changed'] is True
    write_report(run_dir)
    assert 'the current paper.yaml differs' in (run_dir / 'report.md').read_text()


def test_workers_must_be_a_positive_integer():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match='workers'): run_papers(['kivi'], scale='tiny', workers=bad)


ARCH_PAPERS = ['kivi', 'steering_vectors', 'speculative_sampling', 'dpo']   # one per family (kivi failed here before)


def test_papers_run_on_another_architecture(tmp_path):
    "A saved tiny Gemma-3-style model (sliding and global layers, one KV head) passed as --model: each notebook runs to its end."
    from llm_lab.tiny import tiny_model
    model, tok = tiny_model('gemma3')
    d = tmp_path / 'tiny-gemma3'; model.save_pretrained(d); tok.save_pretrained(d)
    run_dir = run_papers(ARCH_PAPERS, scale='tiny', run_name='gemma3', runs_dir=tmp_path / 'runs', model=str(d), workers=WORKERS)
    entries = collect_run(run_dir)
    assert {e['id'] for e in entries} == set(ARCH_PAPERS)
    for e in entries:
        assert e['status']['status'] == 'ok', (e['id'], e['status'].get('error'))
        assert e['identity']['model'] == str(d)
