"""Weight-quantization family x architecture matrix: RTN and GPTQ on every tiny architecture of `llm_lab.tiny`.

Each cell works, with a real numerical check: every decoder linear becomes a `QuantLinear` (Phi-3's fused qkv_proj and
gate_up_proj and GPT-NeoX's query_key_value quantized as whole linears), the logits equal a full-precision model holding the
dequantized weights, the model generates, the stored bits are the closed form's, and `save_pretrained` then
`llm_lab.models.load_model` gives bit-identical logits with the same bits. A group size that does not
divide a linear's inputs (Mistral's o_proj has 96) is a clear error naming the linear, before any weight is touched."""
import copy
import pytest
import torch

from llm_lab.tiny import tiny_model, TINY_ARCHS
from llm_lab.arch import text_config
from llm_lab import models as lab_models
from llm_lab.prune import decoder_linears
from llm_lab.quant import (QuantSpec, QuantPlan, QuantLinear, ActSpec, quantize_model, quantizable_linears, linear_modules,
                           quant_bits, expected_bits, act_ranges, quantize_activations)

ARCHS = list(TINY_ARCHS)
FUSED = {'phi3': ['self_attn.qkv_proj', 'mlp.gate_up_proj'], 'gpt_neox': ['attention.query_key_value']}


def calib_of(n=3, length=40, seed=0):
    "Calibration blocks longer than the sliding windows of Mistral (24) and Gemma 3 (16)."
    return torch.randint(3, 259, (n, length), generator=torch.Generator().manual_seed(seed))


def generates(model, ids, n=4):
    out = model.generate(ids, max_new_tokens=n, do_sample=False)
    with torch.no_grad(): full = model(out[:, :-1], use_cache=False).logits
    return out.shape == (ids.shape[0], ids.shape[1] + n) and torch.equal(full[0, ids.shape[1] - 1:].argmax(-1), out[0, ids.shape[1]:])


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('method,spec', [('rtn', QuantSpec(3, 32)), ('gptq', QuantSpec(3, 32)), ('rtn', QuantSpec(4, None, sym=True)),
                                         ('gptq', QuantSpec(2, -1, zero='float'))], ids=str)
def test_quantize_every_architecture(arch, method, spec, tmp_path):
    fp, tok = tiny_model(arch)
    shapes = {n: tuple(l.weight.shape) for n, l in decoder_linears(fp)}
    m = quantize_model(copy.deepcopy(fp), calib_of(), method, spec)
    qs = linear_modules(m)
    assert set(qs) == set(shapes) and all(isinstance(q, QuantLinear) for q in qs.values())
    assert {n: (q.out_features, q.in_features) for n, q in qs.items()} == shapes        # fused projections stay whole
    for path in FUSED.get(arch, []): assert f'0.{path}' in qs
    plain = copy.deepcopy(fp)
    for n, lin in quantizable_linears(plain).items(): lin.weight.data = qs[n].dequantized()
    ids = calib_of(2, 30, seed=1)
    with torch.no_grad():
        logits, ref = m(ids).logits, fp(ids).logits
        assert torch.equal(logits, plain(ids).logits)
    assert not torch.equal(logits, ref) and torch.isfinite(logits).all()
    assert generates(m, ids[:1, :12])
    bits = quant_bits(m)
    assert bits['quantized_bits'] == sum(expected_bits(spec, *s) for s in shapes.values()) and bits['kept_linears'] == 0
    m.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    assert set(text_config(m).llm_lab_quant) == set(shapes)
    again = lab_models.load_model(str(tmp_path), dtype='float32')[0]
    with torch.no_grad(): assert torch.equal(again(ids).logits, logits)
    assert quant_bits(again) == bits


@pytest.mark.parametrize('arch', ARCHS)
def test_group_size_must_divide_every_linear(arch):
    "g64 divides every linear of the tiny models but Mistral's o_proj (96 inputs = 4 heads x 24): the error names it and the sizes that fit."
    m, _ = tiny_model(arch)
    before = {n: l.weight.clone() for n, l in decoder_linears(m)}
    if arch == 'mistral':
        with pytest.raises(ValueError, match=r'mistral.*group size 64 does not divide the 96 inputs of 0\.self_attn\.o_proj.*fit.*32'):
            quantize_model(m, calib_of(), 'gptq', QuantSpec(3, 64))
        assert all(torch.equal(l.weight, before[n]) for n, l in decoder_linears(m))        # nothing was touched
    else:
        quantize_model(m, calib_of(), 'gptq', QuantSpec(3, 64))
        assert len(linear_modules(m)) == len(before)


@pytest.mark.parametrize('arch', ARCHS)
def test_mixed_plan_and_w8a8(arch):
    "A keep-list (layer 1's attention), per-linear bits and outliers, then static per-tensor W8A8 with the keep-list in FP activations."
    fp, _ = tiny_model(arch)
    first = next(iter(quantizable_linears(fp)))
    w = quantizable_linears(fp)[first].weight
    attn = next(p for p in ('self_attn', 'attention') if any(n.startswith(f'1.{p}.') for n in quantizable_linears(fp)))
    plan = QuantPlan(QuantSpec(8, None, sym=True), {'*.mlp.*': dict(bits=4, group=32)}, keep=[f'1.{attn}.*'],
                     outliers={first: w.abs() > 2.5 * w.abs().mean()})
    m = quantize_model(copy.deepcopy(fp), calib_of(), 'gptq', plan)
    kept = [n for n, q in linear_modules(m).items() if not isinstance(q, QuantLinear)]
    assert kept and all(n.startswith(f'1.{attn}.') for n in kept)
    assert linear_modules(m)[first].n_outliers == int((w.abs() > 2.5 * w.abs().mean()).sum()) > 0
    assert all(q.spec.bits == 4 for n, q in linear_modules(m).items() if '.mlp.' in n)
    ids = calib_of(2, 30, seed=1)
    rng = act_ranges(m, calib_of())
    with torch.no_grad():
        w8 = m(ids).logits
        with quantize_activations(m, ActSpec(8, 'tensor', static=True), rng, keep=kept): w8a8 = m(ids).logits
        assert torch.equal(m(ids).logits, w8)
    assert not torch.equal(w8a8, w8) and (w8a8 - w8).abs().max() < 0.2 * w8.abs().max()
