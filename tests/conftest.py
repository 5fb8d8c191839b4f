import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('LLM_LAB_PROGRESS', '0')
# The lab must work with no hub at all: every test (and every papermill kernel they start) runs offline.
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['HF_DATASETS_OFFLINE'] = '1'

@pytest.fixture(scope='session')
def root() -> Path:
    return ROOT

@pytest.fixture(scope='session')
def embedded():
    "The embedded model, loaded once per test session."
    from llm_lab.models import load_model
    return load_model()

@pytest.fixture()
def tiny():
    from llm_lab.models import tiny_llama
    return tiny_llama()


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "Every registered paper, run once at the tiny scale with 2 notebooks at once (the CI reproducibility check)."
    from llm_lab.repro import run_papers
    return run_papers(scale='tiny', run_name='ci', runs_dir=tmp_path_factory.mktemp('runs'), workers=2)
