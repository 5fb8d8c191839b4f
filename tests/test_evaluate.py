"The lm-eval bridge measures the model as it is: with a KV cache, with a hook active."
import pytest, torch
from transformers import DynamicCache
from llm_lab.evaluate import evaluate_tasks, LAB_TASKS
from llm_lab.hooks import hooks
from llm_lab.kv import KIVICache


@pytest.fixture(scope='module')
def base(embedded):
    model, tok = embedded
    return evaluate_tasks(model, tok, ['lab_continuation_en', 'lab_rolling_en'], limit=12)


ROLLING = 4   # documents read through a cache (token by token chunks: the slow path), and their plain reference


@pytest.fixture(scope='module')
def base_rolling(embedded):
    model, tok = embedded
    return evaluate_tasks(model, tok, ['lab_rolling_en'], limit=ROLLING)['lab_rolling_en']


def test_lab_tasks_give_sane_numbers(base):
    assert 0.25 < base['lab_continuation_en']['acc'] <= 1.0          # 4 choices: above chance on a real model
    assert 1.0 < base['lab_rolling_en']['byte_perplexity'] < 4.0


def test_full_precision_cache_changes_nothing(embedded, base_rolling):
    model, tok = embedded
    r = evaluate_tasks(model, tok, ['lab_rolling_en'], limit=ROLLING, cache_factory=DynamicCache, chunk=16)
    assert r['lab_rolling_en']['bits_per_byte'] == pytest.approx(base_rolling['bits_per_byte'], rel=1e-4)


def test_a_quantized_cache_is_measured(embedded, base_rolling):
    model, tok = embedded
    r = evaluate_tasks(model, tok, ['lab_rolling_en'], limit=ROLLING, cache_factory=lambda: KIVICache(2, 32, 0), chunk=16)
    assert r['lab_rolling_en']['bits_per_byte'] > base_rolling['bits_per_byte']


def test_a_hook_is_active_during_evaluation(embedded, base):
    model, tok = embedded
    noise = lambda x, ctx: x + 4.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x)
    with hooks(model, {('resid', 10): noise}):
        r = evaluate_tasks(model, tok, ['lab_rolling_en'], limit=12)
    assert r['lab_rolling_en']['bits_per_byte'] > base['lab_rolling_en']['bits_per_byte'] + 0.05


def test_every_lab_task_builds(tiny):
    model, tok = tiny
    r = evaluate_tasks(model, tok, LAB_TASKS, limit=2)
    assert set(r) == set(LAB_TASKS)


def test_unreachable_registry_task_says_so(tiny, monkeypatch):
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1'); monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model, tok = tiny
    with pytest.raises(ConnectionError, match='offline, use the lab tasks: lab_continuation_en'):
        evaluate_tasks(model, tok, ['arc_easy'], limit=2)
