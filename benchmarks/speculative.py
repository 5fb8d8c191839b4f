"""Benchmark: llm_lab's speculative decoding against transformers' assisted generation, same target, same draft, same K.

    .venv/bin/python benchmarks/speculative.py [--model smollm2-135m-instruct] [--exit-layers 8 20] [--k 4] [--new 64] [--repeats 3]

Drafts: the target's own early exit (our `early_exit` view, passed to transformers as `assistant_model`) and prompt
lookup (`prompt_lookup_num_tokens`). Greedy, fixed K (`num_assistant_tokens_schedule='constant'`), batch 1, the same
prompts and the same stopping rule on every side: up to `--new` tokens, stopping after the model's EOS (no side suppresses
it). Two prompt sets, each printed: `copy` (repeat-and-explain a corpus quote: what prompt lookup is made for) and `open`
(chat questions and fortunes openings to continue: nothing to copy). Prints tokens/s (median over repeats; tokens actually
generated), ours/transformers ratios, plain greedy decoding for reference, and whether each output is token-identical to
plain greedy.
"""
import argparse, statistics, time, warnings
import torch
from llm_lab.models import load_model, chat_prompt
from llm_lab.data import load_corpus
from llm_lab.decode import speculative_generate, ModelDrafter, early_exit
from llm_lab.decode.speculative import NGramDrafter

warnings.filterwarnings('ignore')
ap = argparse.ArgumentParser()
ap.add_argument('--model', default='smollm2-135m-instruct'); ap.add_argument('--exit-layers', type=int, nargs='+', default=[8, 20])
ap.add_argument('--k', type=int, default=4); ap.add_argument('--new', type=int, default=64)
ap.add_argument('--prompts', type=int, default=3); ap.add_argument('--repeats', type=int, default=3)
ap.add_argument('--sets', nargs='+', default=['copy', 'open'], choices=['copy', 'open'])
a = ap.parse_args()
lm, tok = load_model(a.model)
eos = lm.generation_config.eos_token_id                       # one stopping rule for every side: stop after the model's EOS
quotes = [d for d in load_corpus('fortunes', 'en').test if 60 < len(d) < 240]
QUESTIONS = ['What makes a good friend?', 'Explain why the sky is blue to a child.', 'Give three tips for learning to cook.',
             'Why do people keep diaries?', 'Describe a walk along the sea on a windy day.']
encode = lambda text: tok(text, return_tensors='pt', add_special_tokens=False).input_ids[0].to(lm.device)
SETS = {'copy': [encode(chat_prompt(tok, f'Repeat this quote word for word, then explain what it means.\n\n"{q}"')) for q in quotes[:a.prompts]],
        'open': [encode(chat_prompt(tok, q)) for q in QUESTIONS[:(a.prompts + 1) // 2]]
                + [encode(q[:len(q) // 2]) for q in quotes[a.prompts:a.prompts + a.prompts // 2]]}
gen = dict(do_sample=False, top_k=None, top_p=None, temperature=None, max_new_tokens=a.new, eos_token_id=eos)

def hf(ids, **kw):
    return lm.generate(ids[None], attention_mask=torch.ones_like(ids)[None], **gen, **kw)[0, len(ids):].cpu()

def ours(ids, drafter):
    return speculative_generate(lm, drafter, ids, a.new, k=a.k, eos_token_id=eos)[0]

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
for set_name in a.sets:
    prompts = SETS[set_name]
    plain, ref = tok_s(lambda p: hf(p))
    print(f'\n[{set_name} prompts] {a.model}, {len(prompts)} prompts, up to {a.new} new tokens (stop at EOS), K={a.k}, greedy, device {lm.device}')
    print(f'plain greedy (transformers generate): {plain:7.2f} tok/s, {sum(len(r) for r in ref)} tokens')
    print(f"{'draft':>12} | {'ours tok/s':>10} | {'hf tok/s':>9} | {'ours/hf':>7} | {'ours/plain':>10} | identical (ours, hf)")
    rows = [(f'exit{L}', lambda p, L=L: ours(p, ModelDrafter(early_exit(lm, L))),
             lambda p, L=L: hf(p, assistant_model=early_exit(lm, L), num_assistant_tokens=a.k, num_assistant_tokens_schedule='constant'))
            for L in a.exit_layers]
    rows.append(('lookup', lambda p: ours(p, NGramDrafter(3)), lambda p: hf(p, prompt_lookup_num_tokens=a.k, max_matching_ngram_size=3)))
    for name, f_ours, f_hf in rows:
        s_ours, o_ours = tok_s(f_ours); s_hf, o_hf = tok_s(f_hf)
        same = lambda outs: all(torch.equal(x, r) for x, r in zip(outs, ref))
        print(f'{name:>12} | {s_ours:10.2f} | {s_hf:9.2f} | {s_ours / s_hf:7.2f} | {s_ours / plain:10.2f} | {same(o_ours)}, {same(o_hf)}')
