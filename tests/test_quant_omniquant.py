"""OmniQuant (weight-only LWC, `llm_lab.quant.omniquant`) x every tiny architecture of `llm_lab.tiny`, plus its numerics in float64.

Per architecture: the identity setting (both clipping factors at 1, no training) is RTN bit for bit (codes, scales, zero points,
logits); training lowers the summed block loss on the calibration sequences, the packed model's logits equal a full-precision
model holding the dequantized weights, it generates, holds exactly RTN's bits, and reloads through `llm_lab.models.load_model`
with identical logits. Numerics: the LWC grid is the paper's closed form h = (gamma max - beta min) / (2^N - 1),
z = -round(beta min / h), and the integer zero point carries no gradient (the official code rounds it without STE)."""
import copy, math
import pytest
import torch

from llm_lab.tiny import tiny_model, TINY_ARCHS
from llm_lab import models as lab_models
from llm_lab.quant import QuantSpec, QuantLinear, quantize_model, quantize_rtn, quantizable_linears, linear_modules, quant_bits, rtn
from llm_lab.quant.omniquant import LWC, quantize_omniquant, OMNIQUANT_BITS

ARCHS = list(TINY_ARCHS)
SPEC = QuantSpec(2, 32)          # 32 divides every tiny linear (Mistral's o_proj has 96 inputs: 64 does not)


def calib_of(n=4, length=40, seed=0):
    "Calibration blocks longer than the sliding windows of Mistral (24) and Gemma 3 (16)."
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('arch', ARCHS)
def test_identity_is_rtn(arch):
    fp, _ = tiny_model(arch)
    a = quantize_model(copy.deepcopy(fp), calib_of(), 'omniquant', SPEC, epochs=0, init=math.inf)
    r = quantize_rtn(copy.deepcopy(fp), None, SPEC)
    qa, qr = linear_modules(a), linear_modules(r)
    assert set(qa) == set(qr) and all(isinstance(q, QuantLinear) for q in qa.values())
    for n in qr:
        for buf in ('codes', 'scales', 'zeros'): assert torch.equal(getattr(qa[n], buf), getattr(qr[n], buf)), (n, buf)
    ids = calib_of(1)
    with torch.no_grad(): assert torch.equal(a(ids).logits, r(ids).logits)


@pytest.mark.parametrize('arch', ARCHS)
def test_trains_packs_generates_reloads(arch, tmp_path):
    fp, tok = tiny_model(arch)
    hist = []
    m = quantize_omniquant(copy.deepcopy(fp), calib_of(8, 24), SPEC, epochs=10, history=hist)
    assert sum(h['loss_final'] for h in hist) < sum(h['loss_init'] for h in hist), hist
    plain = copy.deepcopy(fp)
    for n, lin in quantizable_linears(plain).items(): lin.weight.data = linear_modules(m)[n].dequantized()
    ids = calib_of(1, 20, seed=1)
    with torch.no_grad(): assert torch.equal(m(ids).logits, plain(ids).logits)
    out = m.generate(ids[:, :8], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 12)
    assert quant_bits(m) == quant_bits(quantize_rtn(copy.deepcopy(fp), None, SPEC))
    m.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    again = lab_models.load_model(str(tmp_path), dtype='float32')[0]
    with torch.no_grad(): assert torch.equal(again(ids).logits, m(ids).logits)
    assert quant_bits(again) == quant_bits(m)


def test_group_that_does_not_fit_is_named():
    with pytest.raises(ValueError, match='group size 64 does not divide the 96 inputs of 0.self_attn.o_proj'):
        quantize_omniquant(tiny_model('mistral')[0], calib_of(), QuantSpec(3, 64))


@pytest.mark.parametrize('kw,msg', [(dict(spec=QuantSpec(1, 32)), 'omniquant supports 2..8 bits'),
                                    (dict(spec=QuantSpec(3, 32, sym=True)), 'symmetric spec'),
                                    (dict(epochs=-1), 'epochs must be'), (dict(lwc_lr=-1e-2), 'lwc_lr'),
                                    (dict(calib=torch.zeros(0, 8, dtype=torch.long)), 'no blocks')], ids=str)
def test_bad_input(kw, msg):
    args = dict(model=tiny_model('llama')[0], calib=calib_of(), spec=SPEC) | kw
    with pytest.raises(ValueError, match=msg): quantize_omniquant(**args)
    assert OMNIQUANT_BITS == tuple(range(2, 9))


def test_closed_form_float64():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(5, 48, dtype=torch.float64, generator=g)
    lwc = LWC(W, QuantSpec(2, 16, float_dtype='float32')).double()
    with torch.no_grad(): lwc.upper.copy_(torch.randn(5, 3, generator=g) + 1); lwc.lower.copy_(torch.randn(5, 3, generator=g) + 1)
    x = W.view(5, 3, 16); mx, mn = x.amax(-1), x.amin(-1)
    assert (mn < 0).all() and (mx > 0).all()
    gam, bet = torch.sigmoid(lwc.upper.detach()), torch.sigmoid(lwc.lower.detach())
    h = ((gam * mx - bet * mn) / 3).float().double()
    z = torch.round(-(bet * mn) / h)
    ref = ((torch.round(x / h[..., None]) + z[..., None]).clamp(0, 3) - z[..., None]) * h[..., None]
    with torch.no_grad(): torch.testing.assert_close(lwc(W), ref.view(5, 48), rtol=0, atol=1e-12)
    qw = lwc.qweight(W)
    assert torch.equal(qw.scale.double(), h) and torch.equal(qw.zero.long(), z.long())
    assert torch.equal(qw.dequantize(torch.float64), lwc(W).detach())


def test_zero_point_has_no_gradient():
    "The lower logit learns through the step h only: with the step frozen, it gets no gradient (official: zero_point.round())."
    W = torch.randn(4, 32)
    lwc = LWC(W, QuantSpec(3, 16))
    s, z = lwc.grid()
    assert not z.requires_grad and s.requires_grad
    (lwc(W) - W).pow(2).sum().backward()
    assert lwc.lower.grad.abs().sum() > 0 and lwc.upper.grad.abs().sum() > 0


def test_init_inf_equals_rtn_every_grid():
    W = torch.randn(6, 64)
    for spec in [QuantSpec(b, gr, zero=zp) for b in (2, 4) for gr in (16, None, -1) for zp in ('int', 'float')]:
        a, r = LWC(W, spec, math.inf).qweight(W), rtn(W, spec)
        assert torch.equal(a.codes, r.codes) and torch.equal(a.scale, r.scale) and torch.equal(a.zero, r.zero), spec
