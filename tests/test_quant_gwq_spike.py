"""GWQ (llm_lab.quant.gwq) and spike-aware W8A8 / SmoothQuant (llm_lab.quant.spike) x every tiny architecture of `llm_lab.tiny`.

GWQ: each outlier ranking (gradient, Hessian, magnitude) keeps exactly round(ratio * out * in) float16 outliers per linear, the
stored bits are the closed form's and equal across rankings, ratio 0 is RTN bit for bit, and save/reload is identical.
Spike: keeping every linear is the full-precision model bit for bit, the kept linears are untouched (weights, inputs, outputs),
uniform W8A8 moves the logits; SmoothQuant's linears sharing an input are found from the forward, and its transform without
quantization is the identity in float64. Groups of 32 everywhere (Mistral's o_proj has 96 inputs: 64 does not divide it)."""
import copy
import pytest
import torch

from llm_lab.tiny import tiny_model, TINY_ARCHS
from llm_lab import models as lab_models
from llm_lab.quant import QuantSpec, QuantLinear, quantize_model, linear_modules, quantizable_linears, quant_bits, expected_bits
from llm_lab.quant.gwq import SCORES, outlier_count, fitting_group
from llm_lab.quant.spike import (quantize_spike, kept_untouched_err, input_groups, channel_ranges, smoothing_factors, smooth_model,
                                 quantize_smoothquant)

ARCHS = list(TINY_ARCHS)


def calib_of(n=3, length=40, seed=0):
    "Calibration blocks longer than the sliding windows of Mistral (24) and Gemma 3 (16)."
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('arch', ARCHS)
def test_gwq_every_architecture(arch, tmp_path):
    fp, tok = tiny_model(arch)
    calib, ids = calib_of(), calib_of(2, 30, seed=1)
    spec = QuantSpec(3, fitting_group(fp, 32))
    rtn = quantize_model(copy.deepcopy(fp), None, 'rtn', spec)
    zero = quantize_model(copy.deepcopy(fp), calib, 'gwq', spec, ratio=0.0)
    with torch.no_grad(): assert torch.equal(zero(ids).logits, rtn(ids).logits)
    bits = {}
    for score in SCORES:
        m = quantize_model(copy.deepcopy(fp), calib, 'gwq', spec, ratio=0.02, score=score)
        qs, ws = linear_modules(m), quantizable_linears(fp)
        for n, q in qs.items():
            assert isinstance(q, QuantLinear) and q.n_outliers == outlier_count(q.out_features * q.in_features, 0.02) > 0
            mask = q.qweight().outliers
            assert torch.equal(q.dequantized()[mask], ws[n].weight.detach()[mask].half().float())
        bits[score] = quant_bits(m)['quantized_bits']
        assert bits[score] == sum(expected_bits(spec, q.out_features, q.in_features, q.n_outliers) for q in qs.values())
    assert len(set(bits.values())) == 1 and bits['gradient'] > quant_bits(rtn)['quantized_bits']
    m.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    again = lab_models.load_model(str(tmp_path), dtype='float32')[0]
    with torch.no_grad(): assert torch.equal(again(ids).logits, m(ids).logits)
    assert quant_bits(again) == quant_bits(m)


@pytest.mark.parametrize('arch', ARCHS)
def test_spike_and_smoothquant_every_architecture(arch):
    fp, _ = tiny_model(arch)
    calib, ids = calib_of(), calib_of(2, 30, seed=1)
    with torch.no_grad(): ref = fp(ids).logits
    allk = quantize_spike(copy.deepcopy(fp), calib, k=len(linear_modules(fp)))
    with torch.no_grad(): assert torch.equal(allk(ids).logits, ref)
    m = quantize_spike(copy.deepcopy(fp), calib, k=3)
    assert len(m.llm_lab_act_quant.kept) == 3 and kept_untouched_err(m, fp, ids, m.llm_lab_act_quant.kept) == 0
    uniform = quantize_spike(copy.deepcopy(fp), calib, k=0)
    with torch.no_grad(): assert (uniform(ids).logits - ref).abs().max() > 0
    groups = input_groups(fp, calib)
    assert sorted(n for g in groups for n in g) == sorted(linear_modules(fp))
    assert max(map(len, groups)) == (1 if arch in ('phi3', 'gpt_neox') else 3)
    m64 = copy.deepcopy(fp).double()
    with torch.no_grad(): ref64 = m64(ids).logits
    smooth_model(m64, smoothing_factors(m64, input_groups(m64, calib), channel_ranges(m64, calib), 0.5))
    with torch.no_grad(): assert (m64(ids).logits - ref64).abs().max() <= 1e-10 * ref64.abs().max()
    norm_fed = input_groups(fp, calib, norm_fed=True)
    assert len(norm_fed) == len(groups) // 2          # of the four inputs per layer, the attention's and the MLP's come from norms
    for scope in ('all', 'norm'):
        sq = quantize_smoothquant(copy.deepcopy(fp), calib, scope=scope)
        assert len(sq.llm_lab_smoothing.factors) == (len(linear_modules(fp)) if scope == 'all' else sum(map(len, norm_fed)))
        with torch.no_grad(): out = sq(ids).logits
        assert torch.isfinite(out).all() and not torch.equal(out, ref)


def test_clear_errors():
    fp, _ = tiny_model('mistral')
    calib = calib_of()
    with pytest.raises(ValueError, match='does not divide the 96 inputs of 0.self_attn.o_proj'): quantize_model(copy.deepcopy(fp), calib, 'gwq', QuantSpec(3, 64))
    with pytest.raises(ValueError, match='score must be one of'): quantize_model(copy.deepcopy(fp), calib, 'gwq', QuantSpec(3, 32), score='fisher')
    with pytest.raises(ValueError, match='ratio must be'): quantize_model(copy.deepcopy(fp), calib, 'gwq', QuantSpec(3, 32), ratio=0.9)
    with pytest.raises(ValueError, match='k must be an integer'): quantize_model(copy.deepcopy(fp), calib, 'spike', QuantSpec(8, -1, sym=True), k=99)
    with pytest.raises(ValueError, match='alpha must be'): quantize_model(copy.deepcopy(fp), calib, 'smoothquant', QuantSpec(8, -1, sym=True), alpha=2)
