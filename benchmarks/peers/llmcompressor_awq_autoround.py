"""Runs in the llmcompressor peer env (llmcompressor 0.14, transformers 5.17, auto-round 0.15.1): one-shot quantization of a saved
model on given calibration tokens with AWQModifier (+ QuantizationModifier), AutoRoundModifier (auto-round's SignRound block
tuning, driven by llmcompressor's sequential pipeline) or SmoothQuantModifier + W8A8, one run per entry of spec['runs'];
then the perplexity of each quantized model (compressed-tensors' fake-quantized forward, float32) on spec['eval_ids'] with
non-overlapping windows of spec['context'] tokens (mean NLL of every predicted token: the lab's `perplexity` with stride =
context). Writes per run: ppl, wall and user-CPU time of oneshot, nominal bits per weight from the stored qparam dtypes."""
import json, math, os, sys, time
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from llmcompressor import oneshot
from plain_ppl import plain_ppl
import llmc_causal_fix  # noqa: F401  (attention stays causal in the sequential pipeline: see its docstring)
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.pipelines.cache import IntermediatesCache

if not torch.cuda.is_available():          # AWQ pins its cached activations for H2D copies: no accelerator here, nothing to pin
    IntermediatesCache.pin_memory = lambda self, *a, **k: None

# auto-round tunes in bfloat16 autocast on CPU by default (amp=True, and it casts the block to bf16); the AutoRoundModifier
# exposes no `amp`, so it is switched off here: SignRound runs in float32, as our OmniQuant does.
from auto_round.context.model import ModelContext
_set_amp = ModelContext._set_amp_dtype
def _fp32_amp(self):
    self.amp = False; _set_amp(self)
ModelContext._set_amp_dtype = _fp32_amp

spec = json.load(open(sys.argv[1]))
calib = torch.tensor(spec['calib'])
ds = Dataset.from_dict({'input_ids': calib.tolist(), 'attention_mask': torch.ones_like(calib).tolist()})
ids = torch.tensor(spec['eval_ids'])
out = {}


def ppl(model, context): return plain_ppl(model, ids, context)


def wscheme(bits, group, sym=False):
    return dict(num_bits=bits, type='int', symmetric=sym, strategy='group', group_size=group, observer='memoryless_minmax')


def bpw(model, bits):
    "bits per decoder-linear weight: codes + the scale and zero point of each group at their stored dtypes."
    tot = nw = 0
    for n, m in model.named_modules():
        if not (n.startswith('model.layers.') and isinstance(m, torch.nn.Linear) and hasattr(m, 'weight_scale')): continue
        nw += m.weight.numel(); tot += bits * m.weight.numel()
        for k in ('weight_scale', 'weight_zero_point'):
            t = getattr(m, k, None)
            if t is not None: tot += 8 * t.numel() * t.element_size()
    return tot / max(nw, 1)


for run in spec['runs']:
    model = AutoModelForCausalLM.from_pretrained(spec['model_dir'], dtype=torch.float32).eval()
    kind = run['kind']
    if kind == 'fp':
        out[run['tag']] = dict(ppl=ppl(model, spec['context'])); json.dump(out, open(spec['out'], 'w')); continue
    groups = {'group_0': dict(targets=['Linear'], weights=wscheme(run['bits'], run['group'], run.get('sym', False)))} if 'bits' in run else None
    if kind == 'awq':
        from llmcompressor.modifiers.transform.awq import AWQModifier
        recipe = [AWQModifier(duo_scaling=run.get('duo_scaling', True), n_grid=run.get('n_grid', 20)),
                  QuantizationModifier(config_groups=groups, ignore=['lm_head'])]
    elif kind == 'autoround':
        from llmcompressor.modifiers.autoround import AutoRoundModifier
        recipe = [AutoRoundModifier(config_groups=groups, ignore=['lm_head'], iters=run['iters'], batch_size=run['batch_size'],
                                    enable_torch_compile=False)]
    elif kind == 'rtn':
        recipe = [QuantizationModifier(config_groups=groups, ignore=['lm_head'])]
    elif kind == 'smoothquant':
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier
        w8a8 = {'group_0': dict(targets=['Linear'],
                                weights=dict(num_bits=8, type='int', symmetric=True, strategy='channel', observer='memoryless_minmax'),
                                input_activations=dict(num_bits=8, type='int', symmetric=True, strategy='tensor', dynamic=False))}
        recipe = ([SmoothQuantModifier(smoothing_strength=run['alpha'])] if run['alpha'] is not None else []) + \
                 [QuantizationModifier(config_groups=w8a8, ignore=['lm_head'])]
    else: raise ValueError(kind)
    t0, c0 = time.perf_counter(), os.times().user
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(calib), max_seq_length=calib.shape[1],
            pipeline='sequential' if kind != 'rtn' else 'datafree', shuffle_calibration_samples=False)
    wall, cpu = time.perf_counter() - t0, os.times().user - c0
    dtypes = sorted({str(p.dtype) for p in model.parameters()}); model.float()
    out[run['tag']] = dict(ppl=ppl(model, spec['context']), wall_s=wall, cpu_s=cpu, bpw=bpw(model, run.get('bits', 8)), dtypes_after=dtypes)
    print(run['tag'], out[run['tag']], flush=True)
    del model
    json.dump(out, open(spec['out'], 'w'))
