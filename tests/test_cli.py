"The llm-lab console script, as a user runs it."
import subprocess, sys, os
from pathlib import Path

BIN = Path(sys.executable).parent / 'llm-lab'


def run(*args, **kw):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600, **kw)


def test_list():
    r = run('list', '--claims')
    assert r.returncode == 0, r.stderr
    assert 'kivi' in r.stdout and 'nbs/201_kivi.ipynb' in r.stdout and 'key_per_channel' in r.stdout


def test_unknown_paper_fails_before_running_anything():
    r = run('repro', '--papers', 'no-such-paper', '--scale', 'tiny', '--run-name', 'never')
    assert r.returncode != 0 and 'no-such-paper' in r.stderr


def test_bad_scale_is_rejected():
    r = run('repro', '--scale', 'huge')
    assert r.returncode == 2 and 'invalid choice' in r.stderr


def test_report_of_a_missing_run():
    r = run('report', '/nonexistent/run')
    assert r.returncode != 0 and 'no run at' in r.stderr
