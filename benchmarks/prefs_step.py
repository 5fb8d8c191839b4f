"""Benchmark: one DPO training step (loss + backward) of llm_lab.prefs against TRL's DPOTrainer on the same model and batch.

    .venv/bin/python benchmarks/prefs_step.py [--model smollm2-135m-instruct] [--repeats 5]

Both sides compute policy log-probs, the DPO loss against precomputed reference log-probs and the backward pass;
the optimizer step is left out (it is the same AdamW on both sides). Prints the median times and the ratio.
"""
import argparse, statistics, tempfile, time, warnings
import torch
from datasets import Dataset
from llm_lab.models import load_model
from llm_lab.synthetic import sentiment_pairs
from llm_lab.prefs.logps import TokenizedBatch, completion_logps
from llm_lab.prefs.losses import dpo_loss

warnings.filterwarnings('ignore')
ap = argparse.ArgumentParser(); ap.add_argument('--model', default='smollm2-135m-instruct'); ap.add_argument('--repeats', type=int, default=5)
ap.add_argument('--pairs', type=int, default=4); a = ap.parse_args()
from trl import DPOConfig, DPOTrainer
model, tok = load_model(a.model)
data = sentiment_pairs(a.pairs, seed=0)
args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.pairs, report_to=[], max_length=128,
                 use_cpu=not torch.cuda.is_available(), precompute_ref_log_probs=True)
tr = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(data.to_dict()), processing_class=tok)
batch = next(iter(tr.get_train_dataloader()))
batch = {k: v.to(model.device) if hasattr(v, 'to') else v for k, v in batch.items()}
model.train()

def trl_step():
    model.zero_grad(); tr.compute_loss(model, batch).backward()

b = TokenizedBatch(batch['input_ids'], batch['attention_mask'], batch['completion_mask'])
ref_c, ref_r = batch['ref_chosen_logps'], batch['ref_rejected_logps']
def our_step():
    model.zero_grad()
    lp = completion_logps(model, b).logps.chunk(2)
    dpo_loss(lp[0], lp[1], ref_c, ref_r)[0].backward()

def median_time(f):
    f()  # warm-up
    ts = []
    for _ in range(a.repeats):
        t0 = time.perf_counter(); f()
        if torch.cuda.is_available(): torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
t_trl, t_ours = median_time(trl_step), median_time(our_step)
print(f"model {a.model}, {a.pairs} pairs, {tuple(batch['input_ids'].shape)} tokens, device {model.device}")
print(f"TRL DPOTrainer loss+backward: {t_trl * 1000:.0f} ms   llm_lab: {t_ours * 1000:.0f} ms   ratio llm_lab/TRL: {t_ours / t_trl:.2f}")
