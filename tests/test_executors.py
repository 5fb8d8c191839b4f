"""Papers as cluster jobs, tested without a cluster: submitit's local executor runs the same pickled job per paper as SLURM
would (separate processes), a job killed mid-run leaves no partial metrics and is resubmitted, and the SLURM scripts of a
full run are checked without submitting."""
import json, re, time
from pathlib import Path
import pytest
from llm_lab.executors import submit_papers, run_status, job_resources, RESOURCE_DEFAULTS
from llm_lab.repro import collect_run, RunIdentityError
from llm_lab.claims import load_paper, list_papers
from test_repro import fake_lab

SLOW = "import time, pathlib\nif pathlib.Path(out_dir).parent.joinpath('..', 'slow').resolve().exists(): time.sleep(120)\n"
CODE = "from llm_lab.core import Recorder\nrec = Recorder(out_dir)\nrec.log(first=1.0)\n" + SLOW + "rec.log(acc=0.75, k=k)"
CLAIMS = "  - {id: c, text: t, check: 'acc > 0.5'}\n  - {id: inv, kind: invariant, text: t, check: 'first == 1'}\n"


def kill_tree(pid: int):
    "SIGKILL a process and all its descendants (as a scheduler ends a job), read from /proc."
    import os, signal
    children = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: children.setdefault(int((d / 'stat').read_text().rsplit(')', 1)[1].split()[1]), []).append(int(d.name))
            except (OSError, IndexError, ValueError): pass
    todo, tree = [pid], []
    while todo:
        p = todo.pop(); tree.append(p); todo += children.get(p, [])
    for p in tree:
        try: os.kill(p, signal.SIGKILL)
        except OSError: pass


def test_jobs_run_as_separate_processes_and_the_report_merges(tmp_path, monkeypatch):
    fake_lab(tmp_path, monkeypatch, {'a': (CODE, CLAIMS), 'b': (CODE, CLAIMS)})
    out = submit_papers(['a', 'b'], scale='tiny', run_name='jobs', runs_dir=tmp_path / 'runs', executor='submitit-local',
                        wait=True, overrides={'k': 2})
    assert set(out['jobs']) == {'a', 'b'} and len(set(out['jobs'].values())) == 2          # two processes
    entries = {e['id']: e for e in collect_run(out['run_dir'])}
    for pid in 'ab':
        assert entries[pid]['status']['status'] == 'ok' and entries[pid]['metrics']['k'] == 2
        assert [r['verdict'] for r in entries[pid]['claims']] == ['reproduced', 'reproduced']
    assert {r['paper']: r['state'] for r in run_status(out['run_dir'])} == {'a': 'finished', 'b': 'finished'}
    report = (out['run_dir'] / 'report.md').read_text()
    assert '[a](#a) | ok' in report and '[b](#b) | ok' in report                              # written by the jobs themselves
    again = submit_papers(['a', 'b'], scale='tiny', run_name='jobs', runs_dir=tmp_path / 'runs', executor='submitit-local',
                          overrides={'k': 2})
    assert again['jobs'] == {} and sorted(again['skipped']) == ['a', 'b']                     # finished: not resubmitted
    with pytest.raises(RunIdentityError, match='seed'):
        submit_papers(['a'], scale='tiny', run_name='jobs', runs_dir=tmp_path / 'runs', executor='submitit-local', seed=3)


def test_a_killed_job_leaves_no_metrics_and_reruns_to_the_same_report(tmp_path, monkeypatch):
    fake_lab(tmp_path, monkeypatch, {'a': (CODE, CLAIMS)})
    runs = tmp_path / 'runs'
    clean = submit_papers(['a'], scale='tiny', run_name='clean', runs_dir=runs, executor='submitit-local', wait=True)
    (runs / 'slow').mkdir()                                 # the next run of the notebook sleeps after its first metric
    out = submit_papers(['a'], scale='tiny', run_name='killed', runs_dir=runs, executor='submitit-local')
    run_dir, t0 = out['run_dir'], time.time()
    while not (run_dir / 'a' / 'metrics.json').exists() and time.time() - t0 < 120: time.sleep(0.5)
    assert (run_dir / 'a' / 'metrics.json').exists(), 'the job never started'
    states = {r['paper']: r['state'] for r in run_status(run_dir)}
    assert states['a'] == 'running'
    job = json.loads((run_dir / '.jobs' / 'a' / 'job.json').read_text())
    kill_tree(int(job['job_id']))                               # the scheduler kills the job: every process of it
    t0 = time.time()
    while {r['paper']: r['state'] for r in run_status(run_dir)}['a'] != 'lost' and time.time() - t0 < 30: time.sleep(0.5)
    assert {r['paper']: r['state'] for r in run_status(run_dir)}['a'] == 'lost'
    e = collect_run(run_dir)[0]
    assert e['status']['status'] == 'incomplete' and e['metrics'] == {}                     # no partial metrics reported
    assert [r['verdict'] for r in e['claims']] == ['not run', 'not run']
    (runs / 'slow').rmdir()
    again = submit_papers(['a'], scale='tiny', run_name='killed', runs_dir=runs, executor='submitit-local', wait=True)
    assert list(again['jobs']) == ['a']                                                       # resubmitted
    a, b = collect_run(clean['run_dir'])[0], collect_run(run_dir)[0]
    assert a['metrics'] == b['metrics'] and [r['verdict'] for r in a['claims']] == [r['verdict'] for r in b['claims']]


def test_slurm_scripts_of_a_full_run_are_right_without_submitting(tmp_path):
    out = submit_papers(scale='full', run_name='gpu', runs_dir=tmp_path, dry_run=True,
                        slurm=dict(partition='gpu', account='lab', setup=['module load cuda']))
    assert set(out['scripts']) == {p.id for p in list_papers()} and out['jobs'] == {}
    for pid, text in out['scripts'].items():
        res = job_resources(load_paper(pid), 'full')
        flags = dict(re.findall(r'^#SBATCH --([\w-]+)=(\S+)$', text, re.M))
        assert flags['time'] == str(res['time_min']) and flags['cpus-per-task'] == str(res['cpus'])
        assert flags['mem'] == f"{res['mem_gb']}G" and flags.get('gpus-per-node') == (str(res['gpus']) if res['gpus'] else None)
        assert flags['partition'] == 'gpu' and flags['account'] == 'lab' and flags['job-name'] == f'llm_lab-gpu-{pid}'
        assert 'module load cuda' in text and re.search(r'^export LLM_LAB_ROOT=\S+', text, re.M)
        assert re.search(r'python\S* -u -m submitit.core._submit \S+/gpu/.jobs/' + pid, text)
    assert not (tmp_path / 'gpu' / '.jobs').exists() or not any((tmp_path / 'gpu' / '.jobs').rglob('*.pkl'))   # nothing submitted


def test_resources_are_validated(tmp_path, monkeypatch):
    lab = fake_lab(tmp_path, monkeypatch, {'a': ('pass', "  - {id: c, text: t, check: 'x > 0'}\n")})
    y = lab / 'papers' / 'a' / 'paper.yaml'
    y.write_text(y.read_text() + "resources: {full: {gpus: 2, processes: 2, mem_gb: 160}, tiny: {cpus: 0}}\n")
    assert job_resources(load_paper('a'), 'full') == {**RESOURCE_DEFAULTS['full'], 'gpus': 2, 'processes': 2, 'mem_gb': 160}
    with pytest.raises(ValueError, match='cpus = 0'): job_resources(load_paper('a'), 'tiny')


TRAIN = '''
import torch
from llm_lab.core import Recorder
from llm_lab.tiny import tiny_llama
from llm_lab.train import train_lm, LMTrainConfig
model, tok = tiny_llama(seed=0)
ids = torch.tensor(tok(' '.join(['the quick brown fox jumps over the lazy dog'] * 30))['input_ids'])
r = train_lm(model, ids[:512].view(-1, 16), ids[512:640], LMTrainConfig(steps=3, batch_size=4, block_size=16, lr=1e-3, eval_every=3, val_tokens=128))
Recorder(out_dir).log(processes=r.processes, losses=[s['loss'] for s in r.steps], val_nll=r.best_val_nll,
                      weight_sum=float(sum(p.double().sum() for p in model.parameters())))
'''


def test_a_job_trains_on_several_processes(tmp_path, monkeypatch):
    "A paper asking for `processes: 2` runs under torchrun inside its job: its training is DDP, with the losses of one process."
    lab = fake_lab(tmp_path, monkeypatch, {'one': (TRAIN, "  - {id: c, kind: invariant, text: t, check: 'processes == 1'}\n"),
                                           'two': (TRAIN, "  - {id: c, kind: invariant, text: t, check: 'processes == 2'}\n")})
    y = lab / 'papers' / 'two' / 'paper.yaml'
    y.write_text(y.read_text() + "resources: {tiny: {processes: 2, cpus: 1}}\n")
    monkeypatch.setenv('LLM_LAB_PROGRESS', '0')
    out = submit_papers(['one', 'two'], scale='tiny', run_name='ddp', runs_dir=tmp_path / 'runs', executor='submitit-local', wait=True)
    entries = {e['id']: e for e in collect_run(out['run_dir'])}
    one, two = entries['one'], entries['two']
    assert one['status']['status'] == 'ok' and two['status']['status'] == 'ok', (one['status'], two['status'])
    assert (one['metrics']['processes'], two['metrics']['processes']) == (1, 2)
    assert [r['verdict'] for r in two['claims']] == ['reproduced']
    assert two['metrics']['losses'] == pytest.approx(one['metrics']['losses'], rel=1e-5)          # the same global batches
    assert two['metrics']['weight_sum'] == pytest.approx(one['metrics']['weight_sum'], rel=1e-6)
    rank1 = json.loads((out['run_dir'] / '.ranks' / 'rank1' / 'two' / 'metrics.json').read_text())['metrics']
    assert rank1['processes'] == 2 and rank1['weight_sum'] == two['metrics']['weight_sum']       # DDP: both ranks hold the same weights
    nb = (out['run_dir'] / 'two' / 'notebook.ipynb').read_text()
    assert 'training on 2 processes' in nb
    assert {r['paper']: r['state'] for r in run_status(out['run_dir'])} == {'one': 'finished', 'two': 'finished'}
