"""Runs in the llmcompressor peer env (transformers 5.17): GPTQModifier one-shot weight quantization of a saved model on given
calibration tokens, one run per entry of spec['runs']; writes each run's integer codes, scales and zero points per linear, the
size of its compressed checkpoint's decoder tensors, and its wall and user CPU time.

A run's 'precision' is llmcompressor's own GPTQ_PRECISION (float32, as shipped) or float64 (a diagnostic: the module constant is
patched, nothing else), to show how much of a gap with the lab's float64 GPTQ comes from arithmetic precision alone."""
import json, os, shutil, sys, time
from pathlib import Path
import torch
from datasets import Dataset
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from llmcompressor import oneshot
import llmc_causal_fix  # noqa: F401  (attention stays causal in the sequential pipeline: see its docstring)
from llmcompressor.modifiers.gptq import GPTQModifier
import llmcompressor.modifiers.gptq.helpers as gptq_helpers
import llmcompressor.modifiers.gptq.gptq_quantize as gptq_quantize

spec = json.load(open(sys.argv[1]))
calib = torch.tensor(spec['calib'])
ds = Dataset.from_dict({'input_ids': calib.tolist(), 'attention_mask': torch.ones_like(calib).tolist()})
out_dir = Path(spec['out_dir'])
out = {}


def decoder_name(n: str) -> str | None:
    "'model.layers.3.mlp.down_proj' -> '3.mlp.down_proj' (the lab's names); None for anything else."
    p = n.split('.')
    return '.'.join(p[2:]) if len(p) > 3 and p[0] == 'model' and p[1] == 'layers' else None


for run in spec['runs']:
    prec = {'float32': torch.float32, 'float64': torch.float64}[run['precision']]
    gptq_helpers.GPTQ_PRECISION = gptq_quantize.GPTQ_PRECISION = prec
    model = AutoModelForCausalLM.from_pretrained(spec['model_dir'], dtype=torch.float32).eval()
    weights = dict(num_bits=run['bits'], type='int', symmetric=False, observer='memoryless_minmax')
    weights.update(dict(strategy='group', group_size=run['group']) if run['group'] else dict(strategy='channel'))
    mod = GPTQModifier(config_groups={'group_0': dict(targets=['Linear'], weights=weights)}, ignore=['lm_head'],
                       block_size=run['blocksize'], dampening_frac=run['damp'], actorder=None)
    t0, c0 = time.perf_counter(), os.times().user
    oneshot(model=model, dataset=ds, recipe=[mod], num_calibration_samples=len(calib), max_seq_length=calib.shape[1],
            pipeline='sequential', shuffle_calibration_samples=False)
    wall, cpu = time.perf_counter() - t0, os.times().user - c0
    qmin = -2 ** (run['bits'] - 1)
    codes, recon_err = {}, 0.0
    for n, m in model.named_modules():
        name = decoder_name(n)
        if name is None or not isinstance(m, torch.nn.Linear): continue
        W, s, zp = m.weight.detach(), m.weight_scale.detach(), m.weight_zero_point.detach()
        g = W.shape[1] // s.shape[1]
        se, ze = s.repeat_interleave(g, 1), zp.to(W.dtype).repeat_interleave(g, 1)
        q = torch.round(W / se + ze).clamp(qmin, -qmin - 1)           # the integer GPTQ chose: W = (q - zp) * s exactly
        recon_err = max(recon_err, ((q - ze) * se - W).abs().max().item())
        codes[name] = dict(codes=(q - qmin).to(torch.uint8), scale=s.clone(), zero=(zp.to(torch.int16) - qmin).to(torch.uint8))
    tag = run['tag']
    torch.save(codes, out_dir / f'{tag}_codes.pt')
    # the compressed checkpoint llmcompressor writes: bytes of the decoder linears' tensors
    ckpt = out_dir / f'{tag}_ckpt'
    model.save_pretrained(ckpt, save_compressed=True)
    fmt = json.loads((ckpt / 'config.json').read_text()).get('quantization_config', {}).get('format')
    stored, kinds = 0, set()
    for f in ckpt.glob('*.safetensors'):
        with safe_open(str(f), 'pt') as st:
            for k in st.keys():
                if decoder_name(k.rsplit('.', 1)[0]) not in codes: continue
                t = st.get_tensor(k); stored += 8 * t.numel() * t.element_size(); kinds.add(k.rsplit('.', 1)[1])
    shutil.rmtree(ckpt)
    out[tag] = dict(wall_s=wall, cpu_s=cpu, recon_err=recon_err, stored_bits=stored, format=fmt, tensors=sorted(kinds),
                    precision=run['precision'], n_linears=len(codes))
    del model
    json.dump(out, open(spec['out'], 'w'))                            # after each run: a partial result can be reused
