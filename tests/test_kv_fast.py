"""The fast read paths of the lab's KV caches (dequantized straight into one buffer, table lookups, outliers scattered,
RoPE in place) against the reference path written from the definitions: dequantize each part in float64, then
concatenate. Every layer's keys and values are compared at every decode step, then the logits and greedy tokens of a
model decoding through a cache whose streams read the reference way."""
import pytest, torch
from llm_lab.kv import KVStream, KVLayer, KIVICache, RecordingCache, unpack_bits, qtensor_kernel
from llm_lab.kv.kvquant import KVQuantCache, KVQuantStream, capture_kv, calibrate_kvquant, kvquant_kernel
from llm_lab.core import native_enabled
from llm_lab.kv.think import ThinKCache, ThinKStream
from llm_lab.arch import apply_rope
from llm_lab.tiny import tiny_model, TINY_ARCHS


def ref_stream(s: KVStream) -> torch.Tensor:
    "Definition: x_hat = zero + scale * code per group (float64), then the full-precision window."
    parts = []
    if s.q is not None:
        q = s.q
        codes = unpack_bits(q.packed, q.bits, q.length).double()
        parts.append(q.zero.double().repeat_interleave(q.group, q.dim) + q.scale.double().repeat_interleave(q.group, q.dim) * codes)
    if s.window is not None: parts.append(s.window.double())
    return torch.cat(parts, -2)


def ref_kvquant(s: KVQuantStream) -> torch.Tensor:
    "Definition: levels looked up, scaled per channel or token, dense outliers overwrite, RoPE re-applied, after the first tokens."
    B, H, hd = s.shape
    parts = [] if s.first is None else [s.first.double()]
    if s.T:
        D, T = H * hd, s.T
        x = s.dt.decoded.double()[unpack_bits(s.codes, s.bits, D).long()]
        if s.dt.per_channel:
            lo, hi = s.dt.lower.double(), s.dt.upper.double()
            x = x * ((hi - lo) / 2).clamp_min(1e-4) + (hi + lo) / 2
        else: x = x * s.half.double() + s.mid.double()
        if s.val is not None and s.val.numel():
            rows = torch.repeat_interleave(torch.arange(T * B), (s.ptr[1:] - s.ptr[:-1]).long())
            dense = x.transpose(0, 1).reshape(T * B, D).clone()               # rows in (token, batch) order
            dense[rows, s.col.long()] = s.val.double()
            x = dense.reshape(T, B, D).transpose(0, 1)
        x = x.reshape(B, T, H, hd).transpose(1, 2)
        if s.rope is not None:
            cos, sin = s.rope(s.n - T, s.n, x)
            x = apply_rope(x, cos.double(), sin.double())
        parts.append(x)
    return torch.cat(parts, 2)


def ref_think(s: ThinKStream) -> torch.Tensor:
    "Definition: the thin part widened with zeros in the pruned channels, then the whole tokens."
    full = ref_stream(s.full) if isinstance(s.full, KVStream) else s.full.view().double()
    if s.thin is None: return full
    t = ref_stream(s.thin)
    wide = t.new_zeros(*t.shape[:-1], s.dim).scatter_(-1, s.idx.long()[:, :, None].expand(-1, -1, t.shape[2], -1), t)
    return torch.cat([wide, full], 2)


def decode_and_compare(model, cache, ref, steps=40, prompt=70, tol=1e-5):
    "Greedy decode through `cache`; after every step, every layer's read equals the reference read."
    ids = torch.randint(3, 259, (1, prompt), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, past_key_values=cache, use_cache=True)
        for _ in range(steps):
            out = model(out.logits[:, -1:].argmax(-1), past_key_values=cache, use_cache=True)
            for layer in cache.layers:
                for s in (layer.k, layer.v):
                    got = s.view()
                    want = ref(s)
                    assert got.shape == want.shape
                    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)
    return out


@pytest.mark.parametrize('arch', TINY_ARCHS)
def test_kivi_read_equals_definition(arch):
    model, _ = tiny_model(arch)
    for bits in (2, 4):
        cache = KIVICache(bits, 8, 32)
        decode_and_compare(model, cache, ref_stream)
        assert any(l.k.q is not None and l.v.q is not None for l in cache.layers)   # the quantized path was exercised


@pytest.mark.parametrize('arch', ['llama', 'gpt_neox', 'gemma3'])
def test_kvquant_read_equals_definition(arch):
    model, _ = tiny_model(arch)
    ids = torch.randint(3, 259, (2, 64), generator=torch.Generator().manual_seed(1))
    acts = capture_kv(model, ids)
    for bits, outliers in ((3, 0.01), (2, 0.05), (4, 0.0)):
        cal = calibrate_kvquant(acts, bits, outliers=outliers, max_points=4096)
        cache = KVQuantCache(cal)
        decode_and_compare(model, cache, ref_kvquant, tol=1e-4)
        if outliers: assert any(l.k.val is not None and l.k.val.numel() for l in cache.layers)   # outliers were written
        for l in cache.layers:                          # the fused C++ read (when built) and the PyTorch path agree
            for s in (l.k, l.v):
                if s.T and kvquant_kernel() is not None:
                    ref = s.dequantized(native=False)
                    torch.testing.assert_close(s.dequantized(native=True), ref, atol=1e-6 * ref.abs().max().item(), rtol=0)


STORED = ('codes', 'mid', 'half', 'ptr', 'col', 'val', 'first')


@pytest.mark.parametrize('arch', ['llama', 'gpt_neox', 'gemma3'])
def test_kvquant_write_equals_pytorch_path(arch):
    "The fused C++ write stores exactly what the PyTorch write stores, on the keys and values each architecture hands the cache."
    if kvquant_kernel() is None: pytest.skip("C++ kernels are off or could not be built: the PyTorch write is the only one")
    model, _ = tiny_model(arch)
    ids = torch.randint(3, 259, (2, 64), generator=torch.Generator().manual_seed(1))
    acts = capture_kv(model, ids)
    seen = RecordingCache()
    with torch.no_grad(): model(ids, past_key_values=seen, use_cache=True)
    for bits, outliers, per_channel in ((3, 0.01, True), (2, 0.05, False), (4, 0.0, True)):
        cal = calibrate_kvquant(acts, bits, per_channel_keys=per_channel, outliers=outliers, max_points=4096)
        for i in sorted(seen.seen):
            k, v = seen.recorded(i)
            for x, dt, rope in ((k, cal.keys[i], cal.ropes[i] if cal.pre_rope else None), (v, cal.values[i], None)):
                ours, ref = (KVQuantStream(dt, bits, outliers, 1, rope) for _ in range(2))
                for lo, hi in ((0, 40), (40, 41), (41, 42), (42, 64)):       # a prompt, then single tokens
                    ours.append(x[:, :, lo:hi], native=True); ref.append(x[:, :, lo:hi], native=False)
                for name in STORED:
                    a, b = getattr(ours, name), getattr(ref, name)
                    assert (a is None) == (b is None), name
                    if a is not None: assert a.dtype == b.dtype and torch.equal(a, b), (arch, bits, name)
                if outliers: assert ref.val.numel()                              # outliers were written


@pytest.mark.parametrize('arch', ['llama', 'gpt_neox', 'gemma3'])
def test_kivi_write_equals_pytorch_path(arch, monkeypatch):
    "KIVI's fused C++ write (every step's flush) stores exactly what `quantize` and `torch.cat` store, and the logits agree."
    if qtensor_kernel() is None: pytest.skip("C++ kernels are off or could not be built: the PyTorch write is the only one")
    model, _ = tiny_model(arch)
    ids = torch.randint(3, 259, (2, 70), generator=torch.Generator().manual_seed(3))
    def run(native: bool):
        if not native: monkeypatch.setenv('LLM_LAB_NATIVE', '0')
        cache, logits = KIVICache(2, 8, 32), []
        with torch.no_grad():
            out = model(ids, past_key_values=cache, use_cache=True)
            for _ in range(40):
                out = model(out.logits[:, -1:].argmax(-1), past_key_values=cache, use_cache=True); logits.append(out.logits)
        monkeypatch.delenv('LLM_LAB_NATIVE', raising=False)
        return cache, torch.cat(logits, 1)
    (fast, a), (ref, b) = run(True), run(False)
    for lf, lr in zip(fast.layers, ref.layers):
        for s, r in ((lf.k, lr.k), (lf.v, lr.v)):
            assert s.q is not None and torch.equal(s.window, r.window)
            for name in ('packed', 'scale', 'zero'): assert torch.equal(getattr(s.q, name), getattr(r.q, name)), (arch, name)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_kvquant_kernel_builds_unless_disabled():
    "The fused read is what runs on CPU unless C++ kernels are switched off (`LLM_LAB_NATIVE=0`)."
    assert kvquant_kernel() is not None or not native_enabled()


@pytest.mark.parametrize('arch', ['llama', 'qwen2'])
def test_think_read_equals_definition(arch):
    model, _ = tiny_model(arch)
    for quant in (None, KIVICache(2, 16, 16)):
        cache = ThinKCache(model, 0.4, recent=8, quant=quant, dtype=None)
        decode_and_compare(model, cache, ref_think)
        assert cache.layers[0].k.thin is not None


class RefStream(KVStream):
    "A KIVI stream that reads the reference way (dequantize in float64, concatenate): what the fast path must reproduce."
    def read(self, out=None):
        r = ref_stream(self).to(self.window.dtype)
        if out is None: return r
        out.copy_(r); return out


class RefKIVI(KIVICache):
    def make_layer(self):
        G, R, sd = self.group_size, self.residual_length, self.scale_dtype
        return KVLayer(RefStream(self.key_bits, G, R, self.key_axis, sd), RefStream(self.value_bits, G, R, self.value_axis, sd))


@pytest.mark.parametrize('arch', ['llama', 'mistral', 'gpt_neox'])
def test_kivi_fast_path_keeps_logits_and_greedy_tokens(arch):
    model, _ = tiny_model(arch)
    ids = torch.randint(3, 259, (1, 60), generator=torch.Generator().manual_seed(2))
    kw = dict(max_new_tokens=50, do_sample=False, output_scores=True, return_dict_in_generate=True)
    fast = model.generate(ids, past_key_values=KIVICache(2, 8, 32), **kw)
    ref = model.generate(ids, past_key_values=RefKIVI(2, 8, 32), **kw)
    assert torch.equal(fast.sequences, ref.sequences)
    torch.testing.assert_close(torch.stack(fast.scores), torch.stack(ref.scores), atol=1e-4, rtol=1e-4)
