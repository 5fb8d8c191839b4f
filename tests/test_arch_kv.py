"""The KV family on every tiny architecture (llm_lab.tiny.TINY_ARCHS): KIVI, KVQuant, ThinK and ThinK + KIVI inside
`generate`, each equal to its own exact reference where it has one, a left-padded batch equal to each prompt alone where
the method allows it, and a clear error where a method (or the peer) cannot apply."""
import math
import pytest, torch
from transformers import DynamicCache
from llm_lab.tiny import tiny_model, TINY_ARCHS
from llm_lab.arch import ArchitectureError, attention_module, attention_parts, decoder_layers, apply_rope, undo_rope
from llm_lab.evaluate import tensor_bytes
from llm_lab.kv import KIVICache, KVQuantCache, ThinKCache
from llm_lab.kv.kivi import kivi_bits, quanto_cache, quanto_refusal
from llm_lab.kv.kvquant import capture_kv, calibrate_kvquant, layer_ropes
from llm_lab.kv.think import window_queries

PAD = 0
GEN = dict(do_sample=False, pad_token_id=PAD)


@pytest.fixture(scope='module', params=list(TINY_ARCHS))
def arch(request):
    "(name, model) of one tiny architecture, built once per module."
    return request.param, tiny_model(request.param)[0]


def ids(n: int, rows: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 259, (rows, n), generator=torch.Generator().manual_seed(seed))


def padded_batch(short: torch.Tensor, long: torch.Tensor):
    "A left-padded batch of two prompts (1-D) and its attention mask."
    n = len(long) - len(short)
    batch = torch.stack([torch.cat([torch.full((n,), PAD), short]), long])
    mask = torch.stack([torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(len(short), dtype=torch.long)]),
                        torch.ones(len(long), dtype=torch.long)])
    return batch, mask


def logits(model, x, cache):
    with torch.no_grad(): return model(x, past_key_values=cache).logits


# KIVI

def test_kivi_exact_when_nothing_is_quantized(arch):
    "A residual window longer than the sequence quantizes nothing: the logits and greedy tokens of the full cache."
    name, m = arch
    x = ids(60)
    torch.testing.assert_close(logits(m, x, KIVICache(2, 8, 128)), logits(m, x, DynamicCache()), rtol=0, atol=1e-5)
    ref = m.generate(x[:, :40], max_new_tokens=10, **GEN)
    assert torch.equal(m.generate(x[:, :40], max_new_tokens=10, past_key_values=KIVICache(2, 8, 64), **GEN), ref)


@pytest.mark.parametrize('bits', [2, 4])
def test_kivi_generate_and_memory(arch, bits):
    "KIVI in generate; what it holds is the paper's layout (`kivi_bits`) and all its tensors; a left-padded batch: the unpadded row equals it alone."
    name, m = arch
    x = ids(70, 2)
    cache = KIVICache(bits, 8, 16)
    out = m.generate(x[:1, :40], max_new_tokens=12, min_new_tokens=12, past_key_values=cache, **GEN)
    assert out.shape == (1, 52)
    cache.flush()
    k = cache.layers[0].k
    H, D = k.window.shape[1], k.window.shape[-1]
    assert cache.memory_bits() == len(decoder_layers(m)) * H * kivi_bits(51, D, bits, 8, 16, fp_bits=32)
    assert cache.memory_bits() == 8 * tensor_bytes(cache)
    assert cache.memory_bits() < cache.fp_bits(32)
    batch, mask = padded_batch(x[0, :30], x[1, :44])
    got = m.generate(batch, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, past_key_values=KIVICache(bits, 8, 16), **GEN)
    alone = m.generate(x[1:, :44], max_new_tokens=8, min_new_tokens=8, past_key_values=KIVICache(bits, 8, 16), **GEN)
    assert torch.equal(got[1], alone[0])      # groups are per row: the padded row's groups hold padding, the other's do not


def test_kivi_group_must_divide_the_head():
    "Per-token value groups never span two heads: Mistral's 24-channel heads refuse groups of 16, clearly, at the first forward."
    m, _ = tiny_model('mistral')
    with pytest.raises(ValueError, match='divide the head size 24'): logits(m, ids(20), KIVICache(2, 16, 16))
    logits(m, ids(20), KIVICache(2, 8, 16))   # 8 divides 24


def test_kivi_peer_or_its_reason(arch):
    "transformers' QuantizedCache (the KIVI peer) runs where it can; where it refuses the model (sliding-window layers) a clear ArchitectureError."
    name, m = arch
    why = quanto_refusal(m)
    assert (why is not None) == (name in ('mistral', 'gemma3')), (name, why)
    if why:
        with pytest.raises(ArchitectureError, match=f"{type(m).__name__}.*QuantizedCache refuses"): quanto_cache(m)
    else:
        assert m.generate(ids(20), max_new_tokens=4, past_key_values=quanto_cache(m, 2, 16, 16), **GEN).shape == (1, 24)


# KVQuant

@pytest.fixture(scope='module')
def calibrated(arch):
    "Activations captured on two random rows, with the attention inputs seen during the capture (for the pre-RoPE check)."
    name, m = arch
    seen = {}
    hooks = [attention_module(m, i).register_forward_pre_hook(lambda mod, a, kw, i=i: seen.__setitem__(i, (a[0] if a else kw['hidden_states']).detach()),
                                                           with_kwargs=True) for i in range(len(decoder_layers(m)))]
    try: acts = capture_kv(m, ids(48, 2, seed=1))
    finally:
        for h in hooks: h.remove()
    return acts, seen


def test_kvquant_keys_pre_and_post_rope(arch, calibrated):
    """The captured keys before RoPE are the layer's own (projection, key norm) rebuilt by llm_lab.arch from its input; rotated by the
    layer's RoPE table they are the keys the cache received, and un-rotating those gives them back."""
    name, m = arch
    acts, seen = calibrated
    tabs = layer_ropes(m)
    for i in range(len(decoder_layers(m))):
        _, k0, v0 = attention_parts(m, i).project(seen[i])                 # the second calibration row (the last forward)
        flat = lambda t: t[0].transpose(0, 1).reshape(t.shape[2], -1)
        torch.testing.assert_close(acts.keys[i][48:], flat(k0), rtol=0, atol=1e-5)
        torch.testing.assert_close(acts.values[i][48:], flat(v0), rtol=0, atol=1e-5)
        cos, sin = tabs[i](0, 48, k0)
        post = acts.keys_post[i][48:].reshape(48, -1, k0.shape[-1]).transpose(0, 1)[None]
        torch.testing.assert_close(flat(apply_rope(k0, cos, sin)), acts.keys_post[i][48:], rtol=0, atol=1e-5)
        torch.testing.assert_close(flat(undo_rope(post, cos, sin)), acts.keys[i][48:], rtol=0, atol=1e-5)
        assert acts.key_fisher[i].sum() > 0 and acts.value_fisher[i].sum() > 0


def test_kvquant_sink_over_every_token_is_full_precision(arch, calibrated):
    name, m = arch
    cal = calibrate_kvquant(calibrated[0], 3, max_points=4096)
    x = ids(40)
    torch.testing.assert_close(logits(m, x, KVQuantCache(cal, sink=40)), logits(m, x, DynamicCache()), rtol=0, atol=1e-5)
    assert not torch.allclose(logits(m, x, KVQuantCache(cal, sink=1)), logits(m, x, DynamicCache()), atol=1e-4)


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_kvquant_generate(arch, calibrated, bits):
    "KVQuant in generate; a left-padded batch: the unpadded row decodes as alone (the padded row's sink is a pad token, so not that one)."
    name, m = arch
    cal = calibrate_kvquant(calibrated[0], bits, qnorm=bits == 2, max_points=4096)
    x = ids(60, 2, seed=2)
    cache = KVQuantCache(cal)
    out = m.generate(x[:1, :30], max_new_tokens=8, min_new_tokens=8, past_key_values=cache, **GEN)
    assert out.shape == (1, 38) and cache.get_seq_length() == 37
    assert bits < cache.bits_per_element() < 32
    batch, mask = padded_batch(x[0, :20], x[1, :32])
    got = m.generate(batch, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, past_key_values=KVQuantCache(cal), **GEN)
    alone = m.generate(x[1:, :32], max_new_tokens=8, min_new_tokens=8, past_key_values=KVQuantCache(cal), **GEN)
    assert torch.equal(got[1], alone[0])


# ThinK

def test_think_window_queries_are_attentions(arch):
    "The window queries ThinK recomputes, dotted with the cached keys, give the model's own attention probabilities (eager, float64)."
    name, _ = arch
    m, _ = tiny_model(name, attn_implementation='eager', dtype=torch.float64)
    seen = {}
    hooks = [attention_module(m, i).register_forward_pre_hook(
        lambda mod, a, kw, i=i: seen.__setitem__(i, window_queries(m, i, a[0] if a else kw['hidden_states'], kw['position_embeddings'], 8)),
        with_kwargs=True) for i in range(len(decoder_layers(m)))]
    c = DynamicCache()
    with torch.no_grad(): out = m(ids(40), past_key_values=c, output_attentions=True)
    for h in hooks: h.remove()
    types = getattr(m.config, 'layer_types', None)
    for i in range(len(decoder_layers(m))):
        k = c.layers[i].keys.repeat_interleave(attention_parts(m, i).groups, dim=1)
        s = seen[i] @ k.transpose(-1, -2) * attention_module(m, i).scaling
        allowed = torch.arange(40)[None] <= torch.arange(32, 40)[:, None]
        sw = getattr(m.config, 'sliding_window', None)
        if sw and (types[i] if types else 'sliding_attention') == 'sliding_attention':
            allowed &= torch.arange(40)[None] > torch.arange(32, 40)[:, None] - sw
        torch.testing.assert_close(torch.softmax(s.masked_fill(~allowed, -math.inf), -1), out.attentions[i][:, :, -8:], rtol=0, atol=1e-7)


def test_think_ratio_zero_is_the_full_cache(arch):
    name, m = arch
    x = ids(64)
    with torch.no_grad():
        a, b = ThinKCache(m, ratio=0.0, dtype=None), DynamicCache()
        m(x[:, :48], past_key_values=a); m(x[:, :48], past_key_values=b)
        torch.testing.assert_close(logits(m, x[:, 48:], a), logits(m, x[:, 48:], b), rtol=0, atol=1e-5)


def test_think_generate_thin_keys_and_padded_batch(arch):
    "ThinK in generate stores thinner keys for real; a left-padded batch decodes each row as alone (padding is out of the scores)."
    name, m = arch
    x = ids(60, 2, seed=3)
    cache = ThinKCache(m, 0.5, window=8, recent=8, dtype=None)
    out = m.generate(x[:1, :40], max_new_tokens=8, min_new_tokens=8, past_key_values=cache, **GEN)
    assert out.shape == (1, 48)
    D = cache.layers[0].k.dim
    assert cache.layers[0].k.thin.view().shape[-2:] == (40 - 8, D - D // 2)
    assert cache.bits_per_element() < 32
    assert 8 * tensor_bytes(cache) == cache.memory_bits()
    batch, mask = padded_batch(x[0, :28], x[1, :40])
    got = m.generate(batch, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, past_key_values=ThinKCache(m, 0.5, 8, 8, dtype=None), **GEN)
    for row, prompt in ((0, x[0, :28]), (1, x[1, :40])):
        alone = m.generate(prompt[None], max_new_tokens=8, min_new_tokens=8, past_key_values=ThinKCache(m, 0.5, 8, 8, dtype=None), **GEN)
        assert torch.equal(got[row, -8:], alone[0, -8:]), (name, row)


def test_think_with_kivi(arch):
    "ThinK + KIVI in generate: the thin keys quantized per channel, fewer bits than KIVI alone on the same tokens."
    name, m = arch
    x = ids(60, seed=4)
    kivi, both = KIVICache(2, 8, 16), ThinKCache(m, 0.5, window=8, recent=8, quant=KIVICache(2, 8, 16))
    for c in (kivi, both): assert m.generate(x[:, :40], max_new_tokens=8, min_new_tokens=8, past_key_values=c, **GEN).shape == (1, 48)
    assert both.flush().memory_bits() < kivi.flush().memory_bits()


def test_kvquant_scaled_rope_reads_keys_back_at_their_scale():
    """YaRN scales cos and sin by its attention factor (1.139 here): pre-RoPE keys must be turned back with the inverse, not the
    transpose, or every key is read back 1.139^2 = 1.30 times too large."""
    m, _ = tiny_model('llama', rope_parameters=dict(rope_type='yarn', factor=4.0, original_max_position_embeddings=512, rope_theta=10000.0))
    x = ids(48, 2)
    cal = calibrate_kvquant(capture_kv(m, x), 4, outliers=0.0, max_points=4096)
    full, q = DynamicCache(), KVQuantCache(cal, sink=0)
    with torch.no_grad(): m(x, past_key_values=full); m(x, past_key_values=q)
    for ql, fl in zip(q.layers, full.layers):
        assert abs(ql.k.view().norm() / fl.keys.norm() - 1) < 0.05
