"""Benchmark: the composition no peer offers, a lab-made draft + a compressed target cache + speculative decoding (#21 item 3).

    .venv/bin/python benchmarks/decode_compose.py [--draft NAME] [--k K] [--context 1024] [--new 64] [--prompts 2] [--repeats 3] [--readme]

Long-context prompts (so that the compressed caches really compress: `--context` tokens of held-out fortunes, then a chat
question about them or the start of one more quote to continue), greedy, up to `--new` tokens, stopping after the model's
EOS. Rows: plain greedy decoding with the full cache (transformers `generate`), greedy with a KIVI-2 cache and with
ThinK 0.4 + KIVI-2, and speculative decoding with the draft over each of the three. Prints tokens/s (median over
repeats), the ratio to plain greedy fp, how many tokens equal plain greedy fp and the same cache's own greedy output,
and the KV bytes held per token at the end (everything the target cache stores, counted by `memory_bits()` for the lab's
caches and by the tensors' storage for `DynamicCache`).

Why "the same cache's greedy output" can differ from speculative decoding over that cache: a quantized cache's state
depends on when a token leaves the full-precision window, and speculative decoding appends K+1 tokens at a time, so
the queries inside one verification see a slightly different quantized past than one-token greedy steps would. The
counts below measure how often that changes a token.
"""
import argparse, json, statistics, sys, time, warnings
from pathlib import Path
import torch
from transformers import DynamicCache
from llm_lab.models import load_model, drafts_for, local_models, chat_prompt
from llm_lab.data import load_corpus, token_stream
from llm_lab.decode import speculative_generate, ModelDrafter, greedy_reference
from llm_lab.evaluate import tensor_bytes
from llm_lab.kv import KVCache
from llm_lab.kv.kivi import KIVICache
from llm_lab.kv.think import ThinKCache

warnings.filterwarnings('ignore')
ap = argparse.ArgumentParser()
ap.add_argument('--model', default='smollm2-135m-instruct'); ap.add_argument('--draft', default=None)
ap.add_argument('--k', type=int, default=None, help="draft tokens per step (default: the draft's K* from its draft.json, written by make_draft.py; else 3)")
ap.add_argument('--context', type=int, default=1024); ap.add_argument('--new', type=int, default=64)
ap.add_argument('--prompts', type=int, default=2); ap.add_argument('--repeats', type=int, default=3)
ap.add_argument('--readme', action='store_true')
a = ap.parse_args()
lm, tok = load_model(a.model)
name = a.draft or next(iter(drafts_for(a.model)), None)
if name is None: sys.exit(f"no draft is registered for {a.model}: run benchmarks/make_draft.py first (or pass --draft)")
draft, _ = load_model(name)
info = Path(local_models()[name]['path']) / 'draft.json' if name in local_models() else None
k = a.k or (json.loads(info.read_text()).get('k_star', 3) if info and info.exists() else 3)
eos = lm.generation_config.eos_token_id
test = list(load_corpus('fortunes', 'en').test)
context = tok.decode(token_stream(tok, test[40:], a.context)[: a.context])
QUESTIONS = ['Which of these sayings is the wisest, and why?', 'Summarise what these sayings have in common.']
encode = lambda text: tok(text, return_tensors='pt', add_special_tokens=False).input_ids[0].to(lm.device)
prompts = [encode(chat_prompt(tok, f'{context}\n\n{q}')) for q in QUESTIONS[: (a.prompts + 1) // 2]]
prompts += [encode(context + '\n\n' + q[: len(q) // 2]) for q in test[: a.prompts // 2]]
caches = {'fp': DynamicCache, 'kivi2': lambda: KIVICache(2, 32, 128), 'think40+kivi2': lambda: ThinKCache(lm, 0.4, quant=KIVICache(2, 32, 128))}

def held_bytes(c) -> int: return c.memory_bits() // 8 if isinstance(c, KVCache) else tensor_bytes(c)

def run(fn):
    "Median tokens/s over repeats (all prompts), the outputs, and KV bytes per token of the last prompt's cache."
    speeds = []
    for _ in range(a.repeats):
        t0, outs, made = time.perf_counter(), [], []
        for p in prompts: outs.append(fn(p, made))
        speeds.append(sum(len(o) for o in outs) / (time.perf_counter() - t0))
    c = made[-1]
    return statistics.median(speeds), outs, held_bytes(c) / c.get_seq_length()

def greedy(make): return lambda p, made: greedy_reference(lm, p, a.new, eos, cache=made.append(make()) or made[-1])
def spec(make): return lambda p, made: speculative_generate(lm, ModelDrafter(draft), p, a.new, k=k, eos_token_id=eos, cache=made.append(make()) or made[-1])[0]

for p in prompts: greedy_reference(lm, p, 8, eos)   # warm-up: a full long prefill per prompt, so that no row pays first-run costs
rows, ref = [], {}
for cname, make in caches.items():
    s, outs, bpt = run(greedy(make)); ref[cname] = outs; rows.append((f'greedy {cname}', s, outs, cname, bpt))
for cname, make in caches.items():
    s, outs, bpt = run(spec(make)); rows.append((f'speculative {cname}', s, outs, cname, bpt))
same = lambda outs, r: f"{sum(int(torch.equal(o, x)) for o, x in zip(outs, r))}/{len(r)}"
plain = rows[0][1]
lines = [f"{a.model} target, draft {name}, K={k}; {len(prompts)} prompts of ~{a.context}-token context, up to {a.new} new tokens, greedy, median of {a.repeats}", '',
         '| decoding | target cache | tok/s | x plain greedy fp | = greedy fp | = same cache greedy | KV KiB/token |', '|---|---|---|---|---|---|---|']
for label, s, outs, cname, bpt in rows:
    lines.append(f"| {label.split()[0]} | {cname} | {s:.2f} | {s / plain:.2f} | {same(outs, ref['fp'])} | {same(outs, ref[cname])} | {bpt / 1024:.2f} |")
print('\n'.join(lines))
if a.readme:
    sys.path.insert(0, str(Path(__file__).parent))
    from readme import update_readme
    update_readme('decode_compose', '\n'.join(lines), 'python ' + ' '.join(['benchmarks/decode_compose.py', *sys.argv[1:]]))
