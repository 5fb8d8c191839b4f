"""Weight-quantization base (`llm_lab.quant`, nbs/600_quant): numerics against independent references, beyond the notebook's tests.

- RTN equals the closed-form grid, written out again here in float64, on every grid kind;
- GPTQ equals a plain float64 implementation of the paper's algorithm (sequential OBS with an explicit inverse Hessian and its
  downdates, no Cholesky, no lazy batches), and lowers each linear's output error against RTN on a tiny model's calibration inputs;
- the straight-through estimator's gradients (weights, a learnable scale, a learnable zero point);
- packing round trips and exact `memory_bits`; save and reload with the bits claimed and identical logits;
- parity with optimum-quanto's RTN on the same grid (tensor level and whole model);
- bad inputs give clear errors.
"""
import copy, inspect
import pytest
import torch
import torch.nn.functional as F

from llm_lab.tiny import tiny_model, tiny_llama
from llm_lab.prune import calibration_stats, decoder_linears
from llm_lab.arch import layer_calls
from llm_lab import models as lab_models
from llm_lab.quant import (QuantSpec, QuantPlan, QWeight, QuantLinear, ActSpec, QUANTIZERS, QUANTIZER_MODULES, register_quantizer, quantize_model,
                           quantize_rtn, quantize_gptq, rtn, gptq, grid, fake_quant, quantize_codes, dequantize_codes, group_view,
                           round_ste, scale_zero, group_ranges, pack_codes, unpack_codes, expected_bits, quant_bits,
                           bits_per_weight, linear_modules, fake_quant_act, act_ranges, quantize_activations, sweep)

F64 = torch.float64


def calib_of(n=4, length=48, seed=0):
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the closed-form grid, independently

def ref_grid(x: torch.Tensor, spec: QuantSpec):
    "Per row of `x` (rows, n): scale and zero point as the spec documents them, in float64 (scale rounded to the stored dtype)."
    lo, hi = x.amin(-1), x.amax(-1)
    if spec.sym:
        s = torch.maximum(lo.abs(), hi.abs()) * spec.clip / (2 ** (spec.bits - 1) - 1); z = None
    elif spec.zero == 'int':
        lo, hi = lo.clamp(max=0) * spec.clip, hi.clamp(min=0) * spec.clip; s = (hi - lo) / (2 ** spec.bits - 1)
    else:
        lo, hi = lo * spec.clip, hi * spec.clip; s = (hi - lo) / (2 ** spec.bits - 1)
    s = torch.where(s > 0, s, torch.ones_like(s)).to(spec.dtype).clamp_min(torch.finfo(spec.dtype).tiny).to(F64)
    if not spec.sym: z = (-lo / s).round().clamp(0, 2 ** spec.bits - 1) if spec.zero == 'int' else lo.to(spec.dtype).to(F64)
    return s, z


def ref_quant(x: torch.Tensor, s, z, spec: QuantSpec) -> torch.Tensor:
    "Values of `x` on the grid (s, z broadcast against x), in float64."
    qmax = 2 ** spec.bits - 1
    if spec.sym:
        h = 2 ** (spec.bits - 1) - 1
        return torch.round(x / s).clamp(-h, h) * s
    if spec.zero == 'int': return (torch.round(x / s).add(z).clamp(0, qmax) - z) * s
    return z + torch.round((x - z) / s).clamp(0, qmax) * s


def ref_rtn(W: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    rows, cols = W.shape
    g = {None: cols, -1: rows * cols}.get(spec.group, spec.group)
    x = W.reshape(-1, g)                                  # one group per row of x
    s, z = ref_grid(x, spec)
    return ref_quant(x, s[:, None], None if z is None else z[:, None], spec).reshape(rows, cols)


SPECS = [QuantSpec(b, g, sym=sy, zero=z, clip=c) for b in (2, 3, 4, 8) for g in (16, None, -1)
         for sy, z in [(True, 'int'), (False, 'int'), (False, 'float')] for c in (1.0, 0.8)]


@pytest.mark.parametrize('spec', SPECS, ids=str)
def test_rtn_is_the_closed_form_grid(spec):
    W = torch.randn(12, 64, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rtn(W, spec).dequantize(F64), ref_rtn(W, spec))
    assert torch.equal(fake_quant(W, spec), ref_rtn(W, spec))


def test_symmetric_and_asymmetric_ranges():
    "Codes stay in range; a symmetric grid never uses code 0 (restricted range); min-max grids use both ends of every group."
    W = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    for b in (2, 3, 4, 8):
        c = rtn(W, QuantSpec(b, 16, sym=True)).codes.view(16, 4, 16)
        assert c.min() >= 1 and c.max() <= 2 ** b - 1
        assert ((c.amin(-1) == 1) | (c.amax(-1) == 2 ** b - 1)).all()      # the largest magnitude of each group is on an end
        c = rtn(W, QuantSpec(b, 16, zero='float')).codes.view(16, 4, 16)
        assert (c.amin(-1) == 0).all() and (c.amax(-1) == 2 ** b - 1).all()
        qw = rtn(W, QuantSpec(b, 16))
        assert ((qw.codes.view(16, 4, 16) - qw.zero.long()[..., None]) * 0 == 0).all() and qw.zero.max() <= 2 ** b - 1
    # an integer zero point represents 0 exactly; a float one need not
    Wz = W.clone(); Wz[:, ::5] = 0
    assert (rtn(Wz, QuantSpec(3, 16)).dequantize()[:, ::5] == 0).all()
    assert (rtn(Wz, QuantSpec(3, 16, sym=True)).dequantize()[:, ::5] == 0).all()


# ---------------------------------------------------------------- GPTQ against the paper's algorithm, plainly

def gptq_reference(W, H, spec: QuantSpec, damp=0.01, act_order=False, static_groups=False):
    """GPTQ as the paper states it: columns in a fixed order, each quantized, its error spread over the columns not yet quantized
    by the OBS update with the inverse Hessian of those columns, which is then downdated (Gaussian elimination of the column).
    Group grids: at the group's first column from the weights as they are then, or all up front (per channel/tensor, act-order)."""
    W, H = W.to(F64).clone(), H.to(F64).clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1; W[:, dead] = 0
    g = spec.group if spec.group not in (None, -1) else None
    static = g is None or act_order or static_groups
    if static:
        gs = {None: cols, -1: rows * cols}.get(spec.group, spec.group)
        S, Z = ref_grid(W.reshape(-1, gs), spec)
        S = S.reshape(rows if spec.group != -1 else 1, -1); Z = None if Z is None else Z.reshape(S.shape)
    else: S, Z = torch.zeros(rows, cols // g, dtype=F64), None if spec.sym else torch.zeros(rows, cols // g, dtype=F64)
    order = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols)
    Hinv = torch.linalg.inv(H + damp * torch.diag(H).mean() * torch.eye(cols, dtype=F64))
    Q = torch.zeros_like(W)
    for j in order.tolist():
        if not static and j % g == 0:
            s, z = ref_grid(W[:, j:j + g], spec); S[:, j // g] = s
            if Z is not None: Z[:, j // g] = z
        k = 0 if g is None else j // g
        s = S[:, k] if S.shape[0] == rows else S[0, k]
        z = None if Z is None else Z[:, k] if Z.shape[0] == rows else Z[0, k]
        q = ref_quant(W[:, j], s, z, spec)
        Q[:, j] = q
        err = (W[:, j] - q) / Hinv[j, j]
        W -= err[:, None] * Hinv[j][None]                       # rows of Hinv for eliminated columns are 0
        Hinv -= Hinv[:, j:j + 1] @ Hinv[j:j + 1, :] / Hinv[j, j]
    return Q


def correlated_inputs(n=400, d=64, seed=3):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=F64, generator=gen) @ (0.4 * torch.randn(d, d, dtype=F64, generator=gen) + torch.eye(d, dtype=F64))
    return X * torch.linspace(0.2, 3, d, dtype=F64)                  # uneven channel scales: act-order changes the order


@pytest.mark.parametrize('spec,kw', [(QuantSpec(3, 16), {}), (QuantSpec(3, 16), dict(blocksize=5)), (QuantSpec(2, 32, zero='float'), dict(blocksize=24)),
                                     (QuantSpec(4, None, sym=True), {}), (QuantSpec(3, -1), dict(blocksize=16)),
                                     (QuantSpec(3, 16), dict(act_order=True)), (QuantSpec(4, None), dict(act_order=True, blocksize=7)),
                                     (QuantSpec(3, 16), dict(static_groups=True, blocksize=24)),
                                     (QuantSpec(3, 16, float_dtype='float32', clip=0.9), dict(damp=0.1))], ids=str)
def test_gptq_equals_the_reference(spec, kw):
    W = torch.randn(10, 64, dtype=F64, generator=torch.Generator().manual_seed(4))
    X = correlated_inputs(); H = X.T @ X
    H[7, :] = 0; H[:, 7] = 0                                      # one dead input
    ref = gptq_reference(W, H, spec, kw.get('damp', 0.01), kw.get('act_order', False), kw.get('static_groups', False))
    got = gptq(W, H, spec, **kw)
    torch.testing.assert_close(got.dequantize(F64), ref, rtol=0, atol=1e-9)
    assert not torch.equal(ref, ref_rtn(W, spec))                 # the reference really spreads errors


@pytest.mark.parametrize('arch', ['llama', 'phi3', 'gpt_neox'])
def test_gptq_lowers_each_linears_output_error(arch):
    "On a tiny model's calibration inputs (layer 0), GPTQ's ‖X(W − Ŵ)ᵀ‖² is below RTN's for every linear, at W3 g32 and W4 per-channel."
    m, _ = tiny_model(arch)
    calls = layer_calls(m, calib_of())
    stats = calibration_stats(m, 0, [c.hidden for c in calls], calls, hessian=True)
    lins = {n.split('.', 1)[1]: l for n, l in decoder_linears(m) if n.startswith('0.')}
    err = lambda W, Wq, H: (((W - Wq) @ H) * (W - Wq)).sum().item()
    for name, lin in lins.items():
        W, H = lin.weight.detach().double(), stats[name].xtx
        for spec in (QuantSpec(3, 32), QuantSpec(4, None, sym=True)):
            e_gptq, e_rtn = err(W, gptq(W, H, spec).dequantize(F64), H), err(W, rtn(W, spec).dequantize(F64), H)
            assert e_gptq < e_rtn, (arch, name, spec, e_gptq / e_rtn)


# ---------------------------------------------------------------- the straight-through estimator

def test_ste_gradients():
    x = torch.tensor([0.3, -1.2, 2.9, 0.05, 0.74])
    assert torch.equal(round_ste(x), x.round())
    xg = x.clone().requires_grad_(); (round_ste(xg) * torch.arange(5.)).sum().backward()
    assert torch.equal(xg.grad, torch.arange(5.))
    # weights: identity inside the grid, zero where clipped
    W = torch.randn(3, 32, generator=torch.Generator().manual_seed(5)).requires_grad_()
    spec = QuantSpec(3, 16, clip=0.6, float_dtype='float32')
    fake_quant(W, spec).sum().backward()
    s, z = grid(W.detach(), spec)
    u = group_view(W.detach(), 16) / s[..., None]
    inside = ((u.round() + z[..., None].float()) >= 0) & ((u.round() + z[..., None].float()) <= 7)
    torch.testing.assert_close(W.grad, inside.reshape(3, 32).float(), rtol=0, atol=1e-6)
    assert 0 < inside.float().mean() < 1
    # a learnable scale and integer zero point (per tensor): LSQ's gradients
    x = torch.tensor([[0.3, -1.2, 2.9, 0.05, -0.4]])
    s = torch.tensor([[0.25]], requires_grad=True); z = torch.tensor([[3.]], requires_grad=True)
    spec = QuantSpec(3, -1, float_dtype='float32')
    fake_quant(x, spec, s, z).sum().backward()
    r = (x / 0.25).round() + 3; inside = (r >= 0) & (r <= 7); q = r.clamp(0, 7) - 3
    torch.testing.assert_close(s.grad.sum(), torch.where(inside, q - x / 0.25, q).sum())
    torch.testing.assert_close(z.grad.sum(), torch.where(inside, 0.0, -0.25).sum())
    # scale_zero is differentiable in the range (what learnable clipping trains)
    lo, hi = group_ranges(W.detach(), QuantSpec(3, 16))
    gam = torch.ones_like(hi, requires_grad=True)
    s, z = scale_zero(lo, hi * gam, QuantSpec(3, 16, float_dtype='float32'))
    fake_quant(W.detach(), QuantSpec(3, 16, float_dtype='float32'), s, z).pow(2).sum().backward()
    assert gam.grad.abs().sum() > 0


# ---------------------------------------------------------------- packed storage

@pytest.mark.parametrize('bits', range(1, 9))
def test_pack_round_trip_and_exact_bits(bits):
    gen = torch.Generator().manual_seed(bits)
    for n in (1, 7, 8, 9, 37 * 5):
        c = torch.randint(0, 2 ** bits, (n,), generator=gen)
        p = pack_codes(c, bits)
        assert p.dtype == torch.uint8 and p.numel() == -(-n // (8 // bits if 8 % bits == 0 else 8)) * (8 // bits if 8 % bits == 0 else 8) * bits // 8
        assert torch.equal(unpack_codes(p, bits, n).long(), c)
    W = torch.randn(5, 40, generator=gen)
    for spec in [QuantSpec(bits, g, sym=sy, zero=z) for g in (8, None, -1) for sy, z in [(False, 'int'), (False, 'float')] + ([(True, 'int')] if bits > 1 else [])]:
        mask = torch.rand(5, 40, generator=gen) < 0.05
        qw = rtn(W, spec, mask)
        ql = QuantLinear.from_qweight(qw, torch.randn(5))
        back = ql.qweight()
        assert torch.equal(back.codes, qw.codes) and torch.equal(back.scale, qw.scale) and torch.equal(back.dequantize(), qw.dequantize())
        n_out = int(mask.sum())
        R, G = spec.grid_shape(5, 40)
        unit = 8 // bits if 8 % bits == 0 else 8
        by_hand = (-(-200 // unit) * unit * bits + R * G * 16 + (0 if spec.sym else -(-R * G // unit) * unit * bits if spec.zero == 'int' else R * G * 16)
                   + n_out * (16 + 32))
        assert ql.memory_bits() == expected_bits(spec, 5, 40, n_out) == by_hand
        bufs = {k: v for k, v in ql.state_dict().items() if k != 'bias'}
        assert ql.memory_bits() == sum(8 * v.numel() * v.element_size() for v in bufs.values())


def test_casting_the_model_never_touches_the_grid():
    m = quantize_rtn(tiny_llama()[0], None, QuantSpec(3, 32, float_dtype='float32'))
    before = {n: q.qweight().scale.clone() for n, q in linear_modules(m).items()}
    m.to(torch.bfloat16)
    for n, q in linear_modules(m).items():
        assert torch.equal(q.qweight().scale, before[n]) and q.weight.dtype == torch.bfloat16
    with torch.no_grad(): assert m(calib_of(1, 8)).logits.dtype == torch.bfloat16


# ---------------------------------------------------------------- save and reload

def _save(m, tok, path):
    m.save_pretrained(path); tok.save_pretrained(path)
    return path


def test_save_reload_identical_with_the_bits_claimed(tmp_path):
    m, tok = tiny_model('qwen2')                                 # q/k/v biases travel too
    W0 = dict(decoder_linears(m))['0.self_attn.q_proj'].weight
    plan = QuantPlan(QuantSpec(3, 32), {'*.mlp.down_proj': dict(bits=5, group=None, zero='float'), '1.self_attn.*': dict(sym=True)},
                     keep=['0.mlp.gate_proj'], outliers={'0.self_attn.q_proj': W0.abs() > 2 * W0.abs().mean()})
    quantize_gptq(m, calib_of(), plan)
    again = lab_models.load_model(str(_save(m, tok, tmp_path / 'q')), dtype='float32')[0]
    ids = calib_of(2, 20, seed=9)
    with torch.no_grad(): assert torch.equal(again(ids).logits, m(ids).logits)
    assert quant_bits(again) == quant_bits(m)
    assert 3 < quant_bits(m)['bits_per_weight'] < 5
    st = {k: v for k, v in again.state_dict().items()}
    stored = sum(8 * v.numel() * v.element_size() for k, v in st.items()
                 if k.split('.')[-1] in ('codes', 'scales', 'zeros', 'outlier_index', 'outlier_values'))
    assert stored == quant_bits(m)['quantized_bits']
    cfg = (tmp_path / 'q' / 'config.json'); cfg.write_text(cfg.read_text().replace('"bits": 3', '"bits": 9', 1))
    with pytest.raises(ValueError, match='bits must be an integer in 1..8'):      # a corrupted description: a clear error
        lab_models.load_model(str(tmp_path / 'q'))


def test_load_model_reloads_a_quantized_model(tmp_path):
    m, tok = tiny_model('gemma3')
    quantize_rtn(m, None, QuantSpec(4, 32, sym=True))
    again, _ = lab_models.load_model(str(_save(m, tok, tmp_path / 'q')), dtype='float32')
    ids = calib_of(2, 20)
    with torch.no_grad(): assert torch.equal(again(ids).logits, m(ids).logits)
    assert quant_bits(again) == quant_bits(m)


# ---------------------------------------------------------------- optimum-quanto parity

quanto = pytest.importorskip('optimum.quanto')


def test_quanto_rtn_parity_tensor_level():
    """Our RTN on quanto's grid equals quanto's dequantized weights to float tolerance. The settings that correspond:
    qint4/qint2 + MaxOptimizer (float shift)      = QuantSpec(b, g, zero='float', float_dtype='float32');
    the same with zeropoint=True (integer shift)  = QuantSpec(b, g, zero='int', float_dtype='float32') (when each group spans 0);
    qint8 + AbsmaxOptimizer, per output channel   = QuantSpec(8, None, sym=True, float_dtype='float32')."""
    from optimum.quanto import qint2, qint4, qint8
    from optimum.quanto.tensor.optimizers import MaxOptimizer, AbsmaxOptimizer
    from optimum.quanto.tensor.weights import quantize_weight
    W = torch.randn(48, 128, generator=torch.Generator().manual_seed(6))
    for qt, b in ((qint4, 4), (qint2, 2)):
        for g in (32, 64):
            scale, shift = MaxOptimizer()(W, qt, axis=0, group_size=g)
            theirs = quantize_weight(W, qt, axis=0, scale=scale, shift=shift, group_size=g, optimized=False).dequantize()
            torch.testing.assert_close(rtn(W, QuantSpec(b, g, zero='float', float_dtype='float32')).dequantize(), theirs, rtol=0, atol=1e-6)
            scale, zp = MaxOptimizer()(W, qt, axis=0, group_size=g, zeropoint=True)
            theirs = quantize_weight(W, qt, axis=0, scale=scale, shift=zp, group_size=g, optimized=False).dequantize()
            torch.testing.assert_close(rtn(W, QuantSpec(b, g, float_dtype='float32')).dequantize(), theirs, rtol=0, atol=1e-6)
    scale = AbsmaxOptimizer()(W, qint8, axis=0)
    theirs = quantize_weight(W, qint8, axis=0, scale=scale, optimized=False).dequantize()
    torch.testing.assert_close(rtn(W, QuantSpec(8, None, sym=True, float_dtype='float32')).dequantize(), theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize('qtype,spec', [('qint8', QuantSpec(8, None, sym=True, float_dtype='float32')),
                                        ('qint4', QuantSpec(4, None, zero='float', float_dtype='float32'))])
def test_quanto_rtn_parity_whole_model(qtype, spec):
    "quanto.quantize(model, weights=...) on every linear but the LM head (its per-channel grid at these widths) = our RTN: same logits."
    from optimum.quanto import quantize, freeze, qtypes
    fp = tiny_llama()[0]
    theirs = copy.deepcopy(fp); quantize(theirs, weights=qtypes[qtype], exclude='lm_head'); freeze(theirs)
    ours = quantize_rtn(copy.deepcopy(fp), None, spec)
    ids = calib_of(2, 24)
    with torch.no_grad():
        a, b, ref = ours(ids).logits, theirs(ids).logits, fp(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a - ref).abs().max() > 10 * (a - b).abs().max()        # the parity is not just both being close to FP


# ---------------------------------------------------------------- activations, registry, sweep

def test_activation_fake_quant_formulas():
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(7))
    s = x.abs().amax(-1, keepdim=True) / 127
    torch.testing.assert_close(fake_quant_act(x, ActSpec(8, 'token')), (x / s).round().clamp(-127, 127) * s)
    s = x.abs().max() / 7
    torch.testing.assert_close(fake_quant_act(x, ActSpec(4, 'tensor')), (x / s).round().clamp(-7, 7) * s)
    lo, hi = -0.5, 0.5; s = 0.5 / 127
    torch.testing.assert_close(fake_quant_act(x, ActSpec(8, 'tensor', static=True), lo, hi), (x / s).round().clamp(-127, 127) * s)
    lo, hi = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0); s = (hi - lo) / 255; z = (-lo / s).round()
    torch.testing.assert_close(fake_quant_act(x, ActSpec(8, 'token', sym=False)), ((x / s).round().add(z).clamp(0, 255) - z) * s)


def test_activation_hooks_static_ranges_and_removal():
    m, _ = tiny_model('llama')
    calib = calib_of()
    rng = act_ranges(m, calib)
    seen = {}
    hs = [mod.register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, (min(seen.get(n, (9e9,))[0], a[0].min().item()),
                                                                              max(seen.get(n, (0, -9e9))[1], a[0].max().item()))))
          for n, mod in linear_modules(m).items()]
    with torch.no_grad():
        for ids in calib: m(ids[None])
    for h in hs: h.remove()
    assert rng == seen
    ids = calib_of(1, 30, seed=2)
    with torch.no_grad():
        ref = m(ids).logits
        h = quantize_activations(m, ActSpec(8, 'tensor', static=True), rng, keep=['0.mlp.*'])
        assert len(h.names) == len(linear_modules(m)) - 3
        q = m(ids).logits
        h.remove()
        assert torch.equal(m(ids).logits, ref) and not torch.equal(q, ref)


def test_registry_and_the_common_signature():
    assert set(QUANTIZERS) == set(QUANTIZER_MODULES)                           # every method the lab has, loaded on first read
    for name in QUANTIZERS:
        assert list(inspect.signature(QUANTIZERS[name]).parameters)[:3] == ['model', 'calib', 'spec']
    assert QUANTIZERS['rtn'].needs_calib is False and QUANTIZERS['gptq'].bits == tuple(range(2, 9))

    @register_quantizer('toy_w8_only', bits=(8,), needs_calib=False)
    def toy(model, calib, spec):
        from llm_lab.quant import as_plan
        as_plan(spec).resolve(model, toy.bits, 'toy_w8_only')
        return quantize_rtn(model, calib, spec)
    m = quantize_model(tiny_llama()[0], None, 'toy_w8_only', QuantSpec(8, 32))
    assert bits_per_weight(m) == 8 + (16 + 8) / 32
    with pytest.raises(ValueError, match='toy_w8_only supports 8..8 bits'): quantize_model(tiny_llama()[0], None, 'toy_w8_only', QuantSpec(4, 32))
    with pytest.raises(KeyError, match='no quantizer named .*gptq.*rtn'): quantize_model(tiny_llama()[0], None, 'quip', QuantSpec(4, 32))
    dict.pop(QUANTIZERS, 'toy_w8_only')


def test_sweep_table():
    fp, tok = tiny_llama()
    from llm_lab.evaluate import perplexity
    ids = calib_of(1, 300, seed=8)[0]
    rows = sweep(fp, lambda m: perplexity(m, tok, ids, context=100).ppl, ('rtn', 'gptq'), bits=(2, 4), groups=(32,),
                 calibs={'x': calib_of(), 'y': calib_of(seed=1)})
    assert [(r['method'], r['bits'], r['calib']) for r in rows] == [('fp', None, None), ('rtn', 2, None), ('rtn', 4, None),
                                                                     ('gptq', 2, 'x'), ('gptq', 2, 'y'), ('gptq', 4, 'x'), ('gptq', 4, 'y')]
    assert all(r['bits_per_weight'] == b + (16 + b) / 32 for r in rows[1:] for b in [r['bits']])
    assert all(r['seconds'] > 0 and r['ppl'] > 1 for r in rows[1:])


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs():
    m = tiny_model('mistral')[0]
    with pytest.raises(ValueError, match='bits must be an integer in 1..8'): QuantSpec(9)
    with pytest.raises(ValueError, match='keep-list'): QuantSpec(16)
    with pytest.raises(ValueError, match='group must be'): QuantSpec(4, 0)
    with pytest.raises(ValueError, match=r'group size 64 does not divide the 96 inputs of 0\.self_attn\.o_proj .*1, 2, 4, 8, 16, 32'):
        quantize_rtn(m, None, QuantSpec(4, 64))
    with pytest.raises(ValueError, match='gptq supports 2..8 bits'): quantize_gptq(m, calib_of(), QuantSpec(1, 32))
    with pytest.raises(ValueError, match='calib holds no blocks'): quantize_gptq(m, calib_of()[:0], QuantSpec(3, 32))
    with pytest.raises(ValueError, match='LongTensor'): quantize_gptq(m, None, QuantSpec(3, 32))
    with pytest.raises(ValueError, match='outside'): quantize_gptq(m, calib_of() + 1000, QuantSpec(3, 32))
    with pytest.raises(ValueError, match="keep-list entry '0.mlp.fc1' names no decoder linear"):
        quantize_rtn(m, None, QuantPlan(QuantSpec(3, 32), keep=['0.mlp.fc1']))
    with pytest.raises(ValueError, match='blocksize'): quantize_gptq(m, calib_of(), QuantSpec(3, 32), blocksize=0)
    with pytest.raises(ValueError, match='QuantSpec or a QuantPlan'): quantize_rtn(m, None, 4)
    with pytest.raises(ValueError, match="activation keep-list entry 'lm_head'"): quantize_activations(m, ActSpec(), keep=['lm_head'])
    with pytest.raises(ValueError, match='per tensor'): ActSpec(8, 'token', static=True)
    q = quantize_rtn(m, None, QuantSpec(3, 32))
    with pytest.raises(ValueError, match='quantized already'): quantize_gptq(q, calib_of(), QuantSpec(3, 32))
