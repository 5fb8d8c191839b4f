"Runs in the llmcompressor peer env (transformers 5.17): Wanda and SparseGPT one-shot pruning of a saved model on given calibration tokens; writes the zero masks."
import json, sys, time
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from llmcompressor import oneshot
import llmc_causal_fix  # noqa: F401  (attention stays causal in the sequential pipeline: see its docstring)
try: from llmcompressor.modifiers.pruning import WandaPruningModifier
except ImportError: from llmcompressor.modifiers.pruning.wanda import WandaPruningModifier
try: from llmcompressor.modifiers.obcq import SparseGPTModifier
except ImportError: from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier

spec = json.load(open(sys.argv[1]))
calib = torch.tensor(spec['calib'])
ds = Dataset.from_dict({'input_ids': calib.tolist(), 'attention_mask': torch.ones_like(calib).tolist()})
out = {}
for method, Mod in [('wanda', WandaPruningModifier), ('sparsegpt', SparseGPTModifier)]:
    model = AutoModelForCausalLM.from_pretrained(spec['model_dir'], dtype=torch.float32).eval()
    kw = dict(sparsity=spec['sparsity'], mask_structure=spec['mask_structure'], targets=['Linear'], ignore=['re:.*lm_head'])
    if method == 'sparsegpt': kw.update(block_size=spec['blocksize'], dampening_frac=spec['damp'])
    t0 = time.perf_counter()
    oneshot(model=model, dataset=ds, recipe=[Mod(**kw)], num_calibration_samples=len(calib), max_seq_length=calib.shape[1],
            pipeline='sequential')
    wall = time.perf_counter() - t0
    masks = {n: (m.weight == 0).cpu() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and 'lm_head' not in n}
    torch.save(masks, f"{spec['out_dir']}/{method}_masks.pt")
    model.save_pretrained(f"{spec['out_dir']}/{method}")
    out[method] = dict(wall_s=wall)
json.dump(out, open(spec['out'], 'w'))
