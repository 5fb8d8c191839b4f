"""Runs in the hqq peer env (hqq 0.2.8.post1): calibration-free Half-Quadratic Quantization of every decoder linear of a
saved model with hqq's own `Quantizer` (asymmetric, groups of spec['group'] input channels, `axis=1`; `optimize=True`: its
proximal solver of the zero points, lp-norm 0.7; `round_zero` as the run says, default False), one run per entry of spec['runs']; the weights dequantized in float32 and
written back, then the perplexity on spec['eval_ids'] with non-overlapping windows of spec['context'] tokens (mean NLL of
every predicted token: the lab's `perplexity` with stride = context). Writes per run: ppl, wall and user-CPU seconds of the
quantization, bits per weight held (hqq's packed codes + one scale and one zero per group, float32 here; also with them in
float16, as hqq ships them on a GPU)."""
import json, os, sys, time
import torch
from transformers import AutoModelForCausalLM
import hqq
from hqq.core.quantize import Quantizer
from plain_ppl import plain_ppl

spec = json.load(open(sys.argv[1]))
ids = torch.tensor(spec['eval_ids'])


def ppl(model, context): return plain_ppl(model, ids, context)


def linears(model):
    "Every nn.Linear inside the decoder layers (the head and embeddings stay in full precision, as on our side)."
    return [(n, m) for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)]


def quantize_all(model, bits, group, optimize, round_zero):
    "Quantize and dequantize every decoder linear in place; the bits hqq holds for them: (packed codes, scale and zero)."
    code_bits = meta_bits = 0
    for name, lin in linears(model):
        W = lin.weight.data
        wq, meta = Quantizer.quantize(W, nbits=bits, channel_wise=True, group_size=group, optimize=optimize, round_zero=round_zero,
                                      axis=1, bitpack=True, compute_dtype=torch.float32, device='cpu')
        lin.weight.data = Quantizer.dequantize(wq, meta).reshape(W.shape).to(W.dtype)
        code_bits += 8 * wq.numel() * wq.element_size()            # 3-bit: 10 codes per int32 word (3.2 bits per code)
        meta_bits += 8 * sum(t.numel() * t.element_size() for t in (meta['scale'], meta['zero']))
    return code_bits, meta_bits


out = dict(hqq_version=getattr(hqq, '__version__', 'unknown'), torch=torch.__version__)
model = AutoModelForCausalLM.from_pretrained(spec['model_dir'], dtype=torch.float32).eval()
out['fp'] = dict(ppl=ppl(model, spec['context']))
n_weights = sum(m.weight.numel() for _, m in linears(model))
state = {k: v.clone() for k, v in model.state_dict().items()}
for run in spec['runs']:
    model.load_state_dict(state)
    t0, c0 = time.perf_counter(), os.times().user
    code_bits, meta_bits = quantize_all(model, run['bits'], run['group'], run.get('optimize', True), run.get('round_zero', False))
    wall, cpu = time.perf_counter() - t0, os.times().user - c0
    out[run['tag']] = dict(ppl=ppl(model, spec['context']), wall_s=wall, cpu_s=cpu, bpw=(code_bits + meta_bits) / n_weights,
                           bpw_fp16_meta=(code_bits + meta_bits / 2) / n_weights)   # scale and zero in float16, as hqq ships them on GPU
    print(run['tag'], out[run['tag']], file=sys.stderr, flush=True)
json.dump(out, open(spec['out'], 'w'))
