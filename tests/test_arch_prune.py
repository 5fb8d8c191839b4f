"""Pruning family x architecture matrix: every pruner of the lab on every tiny architecture of `llm_lab.tiny`.

Each cell either works, with a real numerical check (exact sparsity, the model still generates, `save_pretrained` then
`llm_lab.models.load_model` gives bit-identical logits), or raises a clear `ArchitectureError` naming the architecture and
the missing part before any weight is cut."""
import inspect
import pytest
import torch

from llm_lab.tiny import tiny_model, TINY_ARCHS
from llm_lab.arch import ArchitectureError, attention_parts, decoder_layers, keep_heads, layer_shapes, layer_types, text_config
from llm_lab.models import load_model
from llm_lab.prune import PRUNERS, PRUNER_MODULES, load_pruners, prune, weight_sparsity, decoder_linears
from llm_lab.prune.llm_pruner import recover_lora
from llm_lab.prune.minitron import retrain
from llm_lab.train import LMTrainConfig

ARCHS = list(TINY_ARCHS)


def model_of(arch, layers=2):
    "A tiny model of `arch` with `layers` decoder layers (Gemma 3 alternating sliding and global) and its tokenizer."
    kw = dict(layer_types=(['sliding_attention', 'full_attention'] * layers)[:layers]) if arch == 'gemma3' else {}
    return tiny_model(arch, num_hidden_layers=layers, **kw)


def calib_of(n=2, length=40, seed=0):
    "Calibration blocks longer than the sliding windows of Mistral (24) and Gemma 3 (16)."
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(seed))


def reloads_identically(model, tok, tmp_path, ids):
    "Save with save_pretrained, reload with load_model: the same logits, bit for bit."
    model.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    again, _ = load_model(str(tmp_path), dtype='float32')
    with torch.no_grad(): return torch.equal(again(ids).logits, model(ids).logits)


def generates(model, ids, n=4):
    out = model.generate(ids, max_new_tokens=n, do_sample=False)
    with torch.no_grad(): full = model(out[:, :-1], use_cache=False).logits
    return out.shape == (ids.shape[0], ids.shape[1] + n) and torch.equal(full[0, ids.shape[1] - 1:].argmax(-1), out[0, ids.shape[1]:])


def test_registry_lists_every_method():
    "Every method the lab has is registered under its name with the family's signature; unknown names list them."
    load_pruners()
    assert set(PRUNERS) >= set(PRUNER_MODULES), set(PRUNER_MODULES) - set(PRUNERS)
    for name in PRUNER_MODULES:
        params = list(inspect.signature(PRUNERS[name]).parameters)
        assert params[:2] == ['model', 'calib'] and len(params) >= 3, (name, params)
    with pytest.raises(KeyError, match='no pruner named .*llm_pruner.*wanda'): prune(model_of('llama')[0], calib_of(), 'obs', 0.5)


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('method,target', [('magnitude', 0.5), ('wanda', 0.5), ('sparsegpt', 0.5), ('wanda', '2:4'), ('sparsegpt', '2:4')])
def test_unstructured(arch, method, target, tmp_path):
    "Exact sparsity (2:4: two zeros in every group of four inputs of every row), the model generates and reloads."
    m, tok = model_of(arch)
    assert prune(m, calib_of(), method, target) is m
    assert weight_sparsity(m)['sparsity'] == 0.5
    if target == '2:4':
        for name, lin in decoder_linears(m):
            assert (lin.weight.view(lin.out_features, -1, 4) == 0).sum(-1).eq(2).all(), name
    ids = calib_of(1, 12, seed=1)
    assert generates(m, ids)
    assert reloads_identically(m, tok, tmp_path, ids)


@pytest.mark.parametrize('arch', ARCHS)
def test_layerwise_calibration_uses_each_layers_call(arch):
    "Wanda on layer 1 sees exactly the inputs an ordinary forward gives it (Gemma 3: the global layer's own mask and RoPE)."
    from llm_lab.prune import calibration_stats, prune_layerwise
    from llm_lab.arch import layer_calls, run_layer
    m, _ = model_of(arch)
    calib = calib_of()
    seen = {}
    hooks = [lin.register_forward_hook(lambda mod, a, out, n=n: seen.__setitem__(n, seen.get(n, 0) + a[0].reshape(-1, a[0].shape[-1]).double().pow(2).sum(0)))
             for n, lin in decoder_linears(m) if n.startswith('1.')]
    with torch.no_grad():
        for ids in calib: m(ids[None], use_cache=False)
    for h in hooks: h.remove()
    calls = layer_calls(m, calib)
    hidden = [run_layer(m, 0, c.hidden, c) for c in calls]
    got = calibration_stats(m, 1, hidden, calls)
    for name, sq in seen.items():
        torch.testing.assert_close(got[name.split('.', 1)[1]].sq, sq, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('method', ['block_influence', 'sleb', 'last', 'random', 'minitron_depth'])
def test_depth(arch, method, tmp_path):
    "One of four layers removed: config, layer types and cache slots renumbered; it generates and reloads identically."
    m, tok = model_of(arch, 4)
    types = layer_types(m)
    prune(m, calib_of(2, 24), method, 1)
    assert len(decoder_layers(m)) == 3 == text_config(m).num_hidden_layers
    if types: assert len(layer_types(m)) == 3 and set(layer_types(m)) <= set(types)
    ids = calib_of(1, 20, seed=1)
    assert generates(m, ids)
    assert reloads_identically(m, tok, tmp_path, ids)


@pytest.mark.parametrize('arch', ARCHS)
def test_minitron_width(arch, tmp_path):
    "Neurons, heads and channels cut to a stock config that reloads identically; GPT-NeoX refuses heads and channels, untouched."
    m, tok = model_of(arch)
    calib, ids = calib_of(), calib_of(1, 12, seed=1)
    target = dict(intermediate=96, heads=2, hidden=48)
    if arch == 'gpt_neox':
        before = {k: v.clone() for k, v in m.state_dict().items()}
        with pytest.raises(ArchitectureError, match=r'GPTNeoXForCausalLM \(gpt_neox\): heads cannot be pruned'):
            prune(m, calib, 'minitron_width', target)
        with pytest.raises(ArchitectureError, match=r'GPTNeoXForCausalLM \(gpt_neox\): the hidden size cannot be pruned'):
            prune(m, calib, 'minitron_width', dict(intermediate=96, hidden=48))
        assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
        target = dict(intermediate=96)
    prune(m, calib, 'minitron_width', target)
    cfg = text_config(m)
    assert cfg.intermediate_size == 96 and not hasattr(cfg, 'llm_lab_layer_shapes')
    if arch != 'gpt_neox': assert (cfg.num_attention_heads, cfg.hidden_size) == (2, 48)
    assert all(s['intermediate_size'] == 96 for s in layer_shapes(m))
    assert generates(m, ids)
    assert reloads_identically(m, tok, tmp_path, ids)


@pytest.mark.parametrize('arch', ARCHS)
def test_llm_pruner(arch, tmp_path):
    "Per-layer shapes (the middle layers pruned) reload identically, after LoRA recovery too; fused q/k/v refuse head pruning."
    m, tok = model_of(arch, 4)
    calib, ids = calib_of(2, 16), calib_of(1, 12, seed=1)
    separate = attention_parts(m, 0).layout == 'separate'
    if not separate:
        before = {k: v.clone() for k, v in m.state_dict().items()}
        with pytest.raises(ArchitectureError, match=rf"{type(m).__name__} \({text_config(m).model_type}\): LLM-Pruner prunes heads layer by layer"):
            prune(m, calib, 'llm_pruner', 0.25, layers=[1, 2])
        assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    prune(m, calib, 'llm_pruner', 0.25, layers=[1, 2], prune_heads=separate)
    shapes = layer_shapes(m)
    full = text_config(tiny_model(arch)[0]).intermediate_size
    assert [s['intermediate_size'] for s in shapes] == [full, 96, 96, full]
    if separate: assert shapes[1]['num_attention_heads'] < shapes[0]['num_attention_heads']
    assert generates(m, ids)
    assert reloads_identically(m, tok, tmp_path / 'pruned', ids)
    blocks = calib_of(4, 16, seed=2)
    r = recover_lora(m, blocks, calib_of(1, 32, seed=3).flatten(), LMTrainConfig(steps=2, batch_size=2, block_size=16, eval_every=1,
                     val_tokens=32, lr=1e-2, keep_best=False))
    assert r.method == 'lora' and 0 < r.share < 0.5 and layer_shapes(m) == shapes
    assert reloads_identically(m, tok, tmp_path / 'recovered', ids)


@pytest.mark.parametrize('arch', ARCHS)
def test_minitron_retrain(arch):
    "Distillation from an identical teacher starts at a KL of 0 and the student trains on every architecture."
    import copy
    m, _ = model_of(arch)
    teacher = copy.deepcopy(m).eval()
    r = retrain(m, calib_of(4, 16, seed=2), calib_of(1, 32, seed=3).flatten(),
                LMTrainConfig(steps=2, batch_size=2, block_size=16, eval_every=1, val_tokens=32, lr=1e-3, keep_best=False), teacher=teacher)
    assert r.method == 'kd' and abs(r.steps[0]['loss']) < 1e-5 and r.share == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(m.parameters(), teacher.parameters()))


@pytest.mark.parametrize('arch', ['phi3', 'gpt_neox'])
def test_per_layer_heads_refused(arch):
    "Per-layer head pruning where the architecture cannot hold it: a clear error naming the model and the reason."
    m, _ = model_of(arch)
    match = 'reads the head count from the config' if arch == 'phi3' else 'heads cannot be pruned'
    with pytest.raises(ArchitectureError, match=match): keep_heads(m, 0, [0, 2])
