"""AWQ-style quantization (`llm_lab.quant.lowbit`, nbs/604_lowbit_llama3) on every tiny architecture, against independent references.

- the scale search's errors equal a float64 computation on the inputs themselves, and the choice is their minimum;
- at exponent 0 the method is RTN, codes and logits bit for bit; salient input channels get a non-zero exponent;
- the packed bits equal the closed form (codes, scales, zero points, one float16 scale per input);
- save and reload through `load_model` gives identical logits and bits;
- bad inputs give clear errors.
"""
import copy, tempfile
import pytest
import torch

from llm_lab.tiny import tiny_model, tiny_llama, TINY_ARCHS
from llm_lab import models as lab_models
from llm_lab.prune import calibration_stats
from llm_lab.arch import layer_calls
from llm_lab.quant import QuantSpec, quantize_model, quantize_rtn, linear_modules, quant_bits, rtn, QUANTIZERS
from llm_lab.quant.lowbit import (ScaledQuantLinear, awq_search, awq_scales, scaled_expected_bits, monotone_violations, AWQ_BITS)

F64 = torch.float64


def calib_of(n=4, length=48, seed=0):
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(seed))


def test_search_errors_match_a_float64_reference_on_real_inputs():
    "On layer 0's calibration inputs of a tiny llama: every exponent's error is ||X W^T - X W_hat^T||^2, and the minimum wins."
    model, _ = tiny_llama()
    calib = calib_of()
    calls = layer_calls(model, calib)
    stats = calibration_stats(model, 0, [c.hidden for c in calls], calls, hessian=True)
    xs = []
    lin = model.model.layers[0].mlp.down_proj
    h = lin.register_forward_hook(lambda m, a, o: xs.append(a[0].detach().reshape(-1, a[0].shape[-1]).double()))
    with torch.no_grad(): model(calib)
    h.remove()
    X = torch.cat(xs)
    sp = QuantSpec(3, 32)
    r = awq_search(lin.weight, X.abs().mean(0), stats['mlp.down_proj'].xtx, sp, n_grid=10)
    for a, loss in r.losses.items():
        s = awq_scales(X.abs().mean(0), a)
        What = rtn(lin.weight * s.float(), sp).dequantize(F64) / s.double()
        ref = ((X @ lin.weight.double().T - X @ What.T) ** 2).sum().item()
        assert loss == pytest.approx(ref, rel=1e-6)
    assert r.losses[r.alpha] == min(r.losses.values())


@pytest.mark.parametrize('arch', TINY_ARCHS)
def test_awq_on_every_architecture(arch):
    fp, tok = tiny_model(arch)
    calib = calib_of()
    sp = QuantSpec(3, 32)                                  # 32 divides every linear of the seven tiny models (mistral's o_proj: 96)
    m = quantize_model(copy.deepcopy(fp), calib, 'awq', sp, n_grid=4)
    qs = linear_modules(m)
    assert all(isinstance(q, ScaledQuantLinear) for q in qs.values())
    assert quant_bits(m)['quantized_bits'] == sum(scaled_expected_bits(q.spec, q.out_features, q.in_features) for q in qs.values())
    a0 = quantize_model(copy.deepcopy(fp), calib, 'awq', sp, alphas=[0.0])
    r0 = quantize_rtn(copy.deepcopy(fp), None, sp)
    for n, q in linear_modules(r0).items(): assert torch.equal(linear_modules(a0)[n].qweight().codes, q.qweight().codes)
    with torch.no_grad(): assert torch.equal(a0(calib).logits, r0(calib).logits)
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d); tok.save_pretrained(d)
        again = lab_models.load_model(d, dtype='float32')[0]
    with torch.no_grad(): assert torch.equal(again(calib).logits, m(calib).logits)
    assert quant_bits(again) == quant_bits(m)


def test_salient_channels_get_a_nonzero_exponent():
    "A layer whose norm makes three input channels 30x larger: the search scales them (exponent > 0) for the linears reading it."
    fp, _ = tiny_llama()
    with torch.no_grad(): fp.model.layers[0].input_layernorm.weight[:3] *= 30   # salient input channels
    m = quantize_model(copy.deepcopy(fp), calib_of(), 'awq', QuantSpec(3, 32), n_grid=8)
    alphas = {n: q.alpha for n, q in linear_modules(m).items()}
    assert alphas['0.self_attn.q_proj'] > 0 and alphas['0.self_attn.k_proj'] > 0 and alphas['0.self_attn.v_proj'] > 0


def test_bad_inputs():
    fp, _ = tiny_llama()
    calib = calib_of()
    with pytest.raises(ValueError, match='awq supports 2..8 bits'): quantize_model(copy.deepcopy(fp), calib, 'awq', QuantSpec(1, 32))
    with pytest.raises(ValueError, match='n_grid'): quantize_model(copy.deepcopy(fp), calib, 'awq', QuantSpec(3, 32), n_grid=0)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): quantize_model(copy.deepcopy(fp), calib, 'awq', QuantSpec(3, 32), alphas=[-0.1])
    with pytest.raises(ValueError, match='no blocks'): quantize_model(copy.deepcopy(fp), calib[:0], 'awq', QuantSpec(3, 32))
    with pytest.raises(ValueError, match='does not divide the 96 inputs of 0.self_attn.o_proj'):
        quantize_model(tiny_model('mistral')[0], calib, 'awq', QuantSpec(3, 64))
    assert QUANTIZERS['awq'].bits == AWQ_BITS


def test_monotone_violations():
    rows = [dict(method='fp', bits=None, group=None, calib=None, ppl=1.0)] + \
           [dict(method='rtn', bits=b, group=64, calib=None, ppl=p) for b, p in [(2, 50.0), (3, 60.0), (4, 5.0)]]
    assert monotone_violations(rows) == [('rtn', 64, None, 2, 3)]
