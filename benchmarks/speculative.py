"""Benchmark: llm_lab's speculative decoding against transformers' assisted generation, same target, same draft, same K.

    .venv/bin/python benchmarks/speculative.py [--model smollm2-135m-instruct] [--exit-layers 8 20] [--k 4] [--new 64] [--repeats 3]
                                               [--draft NAME] [--draft-k auto|K]

Drafts: the target's own early exit (our `early_exit` view, passed to transformers as `assistant_model`) and prompt
lookup (`prompt_lookup_num_tokens`), and a separate draft model listed for the target (`--draft`, default the first of
`drafts_for(model)` made by benchmarks/make_draft.py; its row is skipped with a message when none is listed). Greedy, fixed K
(`num_assistant_tokens_schedule='constant'`, set on the assistant's own generation config with its confidence threshold
off: transformers 5.23 reads K from there and ignores `num_assistant_tokens` passed to the target's `generate`), batch 1, the same
prompts and the same stopping rule on every side: up to `--new` tokens, stopping after the model's EOS (no side suppresses
it). Two prompt sets, each printed: `copy` (repeat-and-explain a corpus quote: what prompt lookup is made for) and `open`
(chat questions and fortunes openings to continue: nothing to copy). Prints tokens/s (median over repeats; tokens actually
generated), ours/transformers ratios, plain greedy decoding for reference, and whether each output is token-identical to
plain greedy. For the draft row also the cost ratio c (the draft's seconds per drafted token in our runs over plain
greedy's seconds per token) and the acceptance a measured on that set, with the analytic speedup
s(a,K,c) = (1-a^(K+1)) / ((1-a)(Kc+1)) beside the measured ours/plain, and where our time goes (draft ms per token, target
ms per verification call of K+1 tokens).
"""
import argparse, copy, json, statistics, sys, time, warnings
from pathlib import Path
import torch
from llm_lab.models import load_model, chat_prompt, drafts_for, local_models
from llm_lab.data import load_corpus
from llm_lab.decode import speculative_generate, ModelDrafter, early_exit
from llm_lab.decode.speculative import NGramDrafter, expected_speedup

warnings.filterwarnings('ignore')
ap = argparse.ArgumentParser()
ap.add_argument('--model', default='smollm2-135m-instruct'); ap.add_argument('--exit-layers', type=int, nargs='*', default=[8, 20])
ap.add_argument('--k', type=int, default=4); ap.add_argument('--new', type=int, default=64)
ap.add_argument('--prompts', type=int, default=3); ap.add_argument('--repeats', type=int, default=3)
ap.add_argument('--sets', nargs='+', default=['copy', 'open'], choices=['copy', 'open'])
ap.add_argument('--draft', default=None, help='a listed draft model (default: the first of drafts_for(model) with a draft.json)')
ap.add_argument('--draft-k', default='auto', help="K for the draft row: an int, or 'auto' = K* from the draft's draft.json (else --k)")
ap.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'],
                help='target and draft dtype (the printed cost model shows what a verification call costs in each)')
ap.add_argument('--readme', action='store_true', help='write the table into README.md (the speculative block)')
a = ap.parse_args()
lm, tok = load_model(a.model, dtype=getattr(torch, a.dtype))
eos = lm.generation_config.eos_token_id                       # one stopping rule for every side: stop after the model's EOS
quotes = [d for d in load_corpus('fortunes', 'en').test if 60 < len(d) < 240]
QUESTIONS = ['What makes a good friend?', 'Explain why the sky is blue to a child.', 'Give three tips for learning to cook.',
             'Why do people keep diaries?', 'Describe a walk along the sea on a windy day.']
encode = lambda text: tok(text, return_tensors='pt', add_special_tokens=False).input_ids[0].to(lm.device)
SETS = {'copy': [encode(chat_prompt(tok, f'Repeat this quote word for word, then explain what it means.\n\n"{q}"')) for q in quotes[:a.prompts]],
        'open': [encode(chat_prompt(tok, q)) for q in QUESTIONS[:(a.prompts + 1) // 2]]
                + [encode(q[:len(q) // 2]) for q in quotes[a.prompts:a.prompts + a.prompts // 2]]}
gen = dict(do_sample=False, top_k=None, top_p=None, temperature=None, max_new_tokens=a.new, eos_token_id=eos)

def assistant(m, k):
    "`m` as transformers' assistant drafting exactly `k` tokens per call: K, schedule and confidence threshold live in its own config."
    m.generation_config = copy.deepcopy(m.generation_config)      # on an early-exit view: its own, not the target's
    m.generation_config.num_assistant_tokens, m.generation_config.num_assistant_tokens_schedule = k, 'constant'
    m.generation_config.assistant_confidence_threshold = 0.0      # default 0.4 stops drafting early: not a fixed K
    return m

listed = local_models()
made = [n for n in drafts_for(a.model) if (Path(listed[n]['path']) / 'draft.json').exists()]
draft_name = a.draft or (made or drafts_for(a.model) or [None])[0]
draft = draft_info = None
if draft_name is None: print(f'no draft model is listed for {a.model} (run benchmarks/make_draft.py): the draft rows are skipped')
else:
    draft, _ = load_model(draft_name, dtype=lm.dtype); draft.eval()
    p = Path(listed[draft_name]['path']) / 'draft.json' if draft_name in listed else None
    draft_info = json.loads(p.read_text()) if p is not None and p.exists() else {}
    if a.draft_k == 'auto':
        draft_k, k_from = (draft_info['k_star'], f"K*={draft_info['k_star']} from its draft.json") if 'k_star' in draft_info else (a.k, f'--k {a.k} (no K* recorded)')
    else: draft_k, k_from = int(a.draft_k), f'--draft-k {a.draft_k}'
    cfgd = draft.config
    print(f"draft {draft_name!r}: {cfgd.num_hidden_layers} layers, hidden {cfgd.hidden_size}, intermediate {cfgd.intermediate_size}, "
          f"{cfgd.num_attention_heads} heads; {sum(p.numel() for p in draft.parameters()) / 1e6:.1f}M params; K={draft_k} ({k_from})")

def needed_acceptance(target: float, k: int, c: float, v: float) -> float:
    "Smallest acceptance a with (1 - a^(K+1)) / (1 - a) / (K c + v) >= target (bisection; nan where even a = 1 falls short)."
    speed = lambda x: (k + 1 if x >= 1 else (1 - x ** (k + 1)) / (1 - x)) / (k * c + v)
    if speed(1.0) < target: return float('nan')
    lo, hi = 0.0, 1.0
    for _ in range(50): lo, hi = (lo, (lo + hi) / 2) if speed((lo + hi) / 2) >= target else ((lo + hi) / 2, hi)
    return hi

def hf(ids, **kw):
    return lm.generate(ids[None], attention_mask=torch.ones_like(ids)[None], **gen, **kw)[0, len(ids):].cpu()

def ours(ids, drafter, k=None, log=None):
    out, st = speculative_generate(lm, drafter, ids, a.new, k=k or a.k, eos_token_id=eos)
    if log is not None: log.append(st)
    return out

def tok_s(fn):
    "Median over repeats of total new tokens / total seconds over all prompts; and the outputs."
    speeds = []
    for _ in range(a.repeats):
        if lm.device.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter(); outs = [fn(p) for p in prompts]
        if lm.device.type == 'cuda': torch.cuda.synchronize()
        speeds.append(sum(len(o) for o in outs) / (time.perf_counter() - t0))
    return statistics.median(speeds), outs

hf(SETS[a.sets[0]][0][:8])  # warm-up
md = ['| prompts | draft | K | ours tok/s | transformers tok/s | ours / transformers | ours / plain greedy | identical to greedy (ours, transformers) |',
      '|---|---|---|---|---|---|---|---|']
for set_name in a.sets:
    prompts = SETS[set_name]
    plain, ref = tok_s(lambda p: hf(p))
    print(f'\n[{set_name} prompts] {a.model}, {len(prompts)} prompts, up to {a.new} new tokens (stop at EOS), K={a.k}, greedy, device {lm.device}')
    print(f'plain greedy (transformers generate): {plain:7.2f} tok/s, {sum(len(r) for r in ref)} tokens')
    md.append(f'| {set_name} | none: plain greedy | | | {plain:.2f} | | 1.00 | |')
    print(f"{'draft':>12} | {'ours tok/s':>10} | {'hf tok/s':>9} | {'ours/hf':>7} | {'ours/plain':>10} | identical (ours, hf)")
    rows = [(f'exit{L}', lambda p, L=L: ours(p, ModelDrafter(early_exit(lm, L))),
             lambda p, L=L: hf(p, assistant_model=assistant(early_exit(lm, L), a.k), num_assistant_tokens=a.k, num_assistant_tokens_schedule='constant'))
            for L in a.exit_layers]
    rows.append(('lookup', lambda p: ours(p, NGramDrafter(3)), lambda p: hf(p, prompt_lookup_num_tokens=a.k, max_matching_ngram_size=3)))
    for name, f_ours, f_hf in rows:
        s_ours, o_ours = tok_s(f_ours); s_hf, o_hf = tok_s(f_hf)
        same = lambda outs: all(torch.equal(x, r) for x, r in zip(outs, ref))
        print(f'{name:>12} | {s_ours:10.2f} | {s_hf:9.2f} | {s_ours / s_hf:7.2f} | {s_ours / plain:10.2f} | {same(o_ours)}, {same(o_hf)}')
        md.append(f'| {set_name} | {name} | {a.k} | {s_ours:.2f} | {s_hf:.2f} | {s_ours / s_hf:.2f} | {s_ours / plain:.2f} | {same(o_ours)}, {same(o_hf)} |')
    if draft is None: print(f'{"draft":>12} | skipped: no draft model listed for {a.model}'); continue
    log, hf_draft = [], assistant(draft, draft_k)
    s_ours, o_ours = tok_s(lambda p: ours(p, ModelDrafter(draft), k=draft_k, log=log))
    s_hf, o_hf = tok_s(lambda p: hf(p, assistant_model=hf_draft, num_assistant_tokens=draft_k, num_assistant_tokens_schedule='constant'))
    last = log[-len(prompts):]                                     # the last repeat's runs
    betas = [b for st in last for b in st.betas]; alpha = sum(betas) / len(betas)
    drafted = sum(sum(st.proposed) for st in last); calls = sum(st.target_calls for st in last)
    draft_ms = 1e3 * sum(st.draft_s for st in last) / drafted
    c = draft_ms / (1e3 / plain)                                   # plain greedy's seconds per token, this set
    same = lambda outs: all(torch.equal(x, r) for x, r in zip(outs, ref))
    print(f'{"draft K=" + str(draft_k):>12} | {s_ours:10.2f} | {s_hf:9.2f} | {s_ours / s_hf:7.2f} | {s_ours / plain:10.2f} | {same(o_ours)}, {same(o_hf)}'
          f'   ({draft_name})')
    md.append(f'| {set_name} | lab-made draft ({draft_name}; a={alpha:.2f}, c={c:.2f}, analytic {expected_speedup(alpha, draft_k, c):.2f}x) | {draft_k} | {s_ours:.2f} | {s_hf:.2f} | '
              f'{s_ours / s_hf:.2f} | {s_ours / plain:.2f} | {same(o_ours)}, {same(o_hf)} |')
    v = 1e3 * sum(st.target_s for st in last) / calls / (1e3 / plain)   # a verification call's cost in plain greedy steps
    need = {x: needed_acceptance(x, draft_k, c, v) for x in (1.0, 1.3)}
    print(f'{"":>12}   measured cost model: verification call = {v:.2f} plain steps, so s = E[tokens per call] / (K c + {v:.2f}); '
          f'acceptance needed at this c and K: {need[1.0]:.2f} for 1.0x, {need[1.3]:.2f} for 1.3x plain (measured {alpha:.2f})')
    print(f'{"":>12}   measured on this set: a={alpha:.3f}, c={c:.3f} (draft {draft_ms:.1f} ms/token, plain {1e3 / plain:.1f} ms/token); '
          f'analytic s(a,K,c)={expected_speedup(alpha, draft_k, c):.2f} vs measured ours/plain {s_ours / plain:.2f}; '
          f'tokens per target call {sum(st.new_tokens for st in last) / calls:.2f}; target {1e3 * sum(st.target_s for st in last) / calls:.1f} ms '
          f'per verification call of up to {draft_k + 1} tokens; draft share of our time {sum(st.draft_s for st in last) / sum(st.total_s for st in last):.0%}')

print('\n' + '\n'.join(md))
if a.readme:
    sys.path.insert(0, str(Path(__file__).parent))
    from readme import update_readme
    update_readme('speculative', f'{a.model} target ({a.dtype}), up to {a.new} new tokens, greedy, stop at EOS on every side, median of {a.repeats}; '
                  'exitL = the target\'s first L layers as draft, lookup = prompt lookup (n-gram 3)\n\n' + '\n'.join(md),
                  'python ' + ' '.join(['benchmarks/speculative.py', *sys.argv[1:]]))
