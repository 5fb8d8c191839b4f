"""Make a draft model for speculative decoding from the embedded model: Minitron depth + width pruning, then logit distillation.

    .venv/bin/python benchmarks/make_draft.py [--model smollm2-135m-instruct] [--candidates 2x576x1536x9 4x384x1024x6 6x288x768x6]
                                              [--probe-steps 8] [--budget-min 30] [--name NAME]

Phases (each timed and printed):
1. the target's own greedy continuations of TRAINING prompts (chat questions written here from topic x template, never the
   benchmark's `QUESTIONS`; openings of fortunes TRAIN-split quotes) and of HELD-OUT prompts (other topics, fortunes
   CALIBRATION-split openings), generated batched with left padding. The fortunes TEST split (the benchmark's) is never read.
2. the cost model: the target's time for a forward of 1..K+1 tokens after a `--ctx`-token cache, and for each candidate
   shape (layers x hidden x intermediate x heads) the draft's time per token at the same cache; c = draft / target (1 token).
3. per candidate: Minitron depth pruning (`prune_depth_minitron`: drop-one calibration loss) then Minitron width pruning
   (`prune_minitron_width`: activation importance), a short KD run (`retrain(..., teacher=target)`) on the same blocks, and
   its greedy acceptance a on the held-out continuations (teacher-forced: the draft's argmax after each prefix of the
   target's own greedy output equals the target's next token). Predicted speedup over K = 1..`--kmax`:
   analytic s = (1-a^(K+1)) / ((1-a)(Kc+1)) (`expected_speedup`), and `s_meas`, the same with the target's measured
   K+1-token verification time instead of assuming it equals one token's. The shape and K* with the best s_meas are kept.
4. the full KD run of the kept candidate (continuing from its probe), final a, K*, a real `speculative_generate` check on
   held-out prompts, then save + `register_model(name, path, description, draft_for=model)` + `draft.json` beside it.
"""
import argparse, copy, json, math, re, statistics, time, warnings
from pathlib import Path
import torch
from transformers import DynamicCache
from llm_lab.core import seed_everything, cache_dir, lab_root
from llm_lab.models import load_model, register_model, local_models, drafts_for, chat_prompt
from llm_lab.data import load_corpus, token_blocks
from llm_lab.arch import text_config, decoder_layers
from llm_lab.prune.minitron import prune_depth_minitron, prune_minitron_width, retrain
from llm_lab.train import LMTrainConfig
from llm_lab.decode import speculative_generate, autoregressive_generate, ModelDrafter, expected_tokens_per_call
from llm_lab.decode.speculative import expected_speedup

warnings.filterwarnings('ignore')
ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--model', default='smollm2-135m-instruct')
ap.add_argument('--name', default=None, help='registry name of the draft (default: <model>-draft-minitron)')
ap.add_argument('--out', default=None, help='where to save it (default: <lab cache>/drafts/<name>)')
ap.add_argument('--candidates', nargs='+', default=['2x576x1536x9', '4x384x1024x6', '6x288x768x6'],
                help='layers x hidden x intermediate x query-heads (multiple of the KV heads); head size is kept')
ap.add_argument('--seed', type=int, default=0); ap.add_argument('--threads', type=int, default=None)
ap.add_argument('--train-questions', type=int, default=64); ap.add_argument('--train-openings', type=int, default=64)
ap.add_argument('--heldout', type=int, default=12, help='held-out prompts of each kind (chat, fortunes openings)')
ap.add_argument('--gen-new', type=int, default=96); ap.add_argument('--gen-batch', type=int, default=32)
ap.add_argument('--calib-blocks', type=int, default=2); ap.add_argument('--calib-len', type=int, default=256)
ap.add_argument('--block-size', type=int, default=256); ap.add_argument('--batch-size', type=int, default=4)
ap.add_argument('--corpus-share', type=float, default=0.5, help='fortunes train-split blocks per generation block')
ap.add_argument('--lr', type=float, default=5e-4); ap.add_argument('--temperature', type=float, default=1.0)
ap.add_argument('--probe-steps', type=int, default=8)
ap.add_argument('--steps', type=int, default=200, help='most full-KD steps; fewer if --budget-min runs out')
ap.add_argument('--budget-min', type=float, default=30, help='wall-clock budget of the whole script: the full KD gets what is left')
ap.add_argument('--eval-every', type=int, default=20)
ap.add_argument('--ctx', type=int, default=256, help='cache length at which costs are timed')
ap.add_argument('--no-register', action='store_true', help='save without listing it (smoke tests)')
ap.add_argument('--kmax', type=int, default=8); ap.add_argument('--time-steps', type=int, default=8)
a = ap.parse_args()
if a.threads: torch.set_num_threads(a.threads)
seed_everything(a.seed)
T0 = time.perf_counter(); phases = {}
def phase(name, t):
    phases[name] = round(time.perf_counter() - t, 1)
    print(f'[time] {name}: {phases[name]:.1f} s (total {time.perf_counter() - T0:.0f} s)', flush=True)

target, tok = load_model(a.model); target.eval()
eos = target.generation_config.eos_token_id
eos_set = set([eos] if isinstance(eos, int) else eos)
name = a.name or f'{Path(str(a.model)).name}-draft-minitron'
out = Path(a.out).expanduser() if a.out else cache_dir() / 'drafts' / name
print(f'target {a.model}: {len(decoder_layers(target))} layers, hidden {text_config(target).hidden_size}; draft -> {name} at {out}; '
      f'{torch.get_num_threads()} threads', flush=True)

# ---- 1. prompts and the target's own greedy continuations ------------------------------------------------------------
bench = (lab_root() / 'benchmarks' / 'speculative.py').read_text()
BENCH_QUESTIONS = set(re.findall(r"'([^']+\?|[^']+\.)'", bench[bench.index('QUESTIONS'):bench.index('encode =')]))
TOPICS = ['a garden', 'the moon', 'bread', 'a library', 'trains', 'honey bees', 'the ocean tides', 'a bicycle', 'volcanoes', 'tea',
          'chess', 'rain', 'a city park', 'paper', 'music lessons', 'the night sky', 'a lighthouse', 'winter', 'a market', 'maps',
          'clocks', 'mountains', 'a river', 'soup', 'letters', 'forests', 'a museum', 'birds', 'the desert', 'a bridge', 'snow',
          'a small town', 'coffee', 'a old house', 'kites', 'a farm', 'islands', 'a school', 'rivers in spring', 'the wind']
HELD_TOPICS = ['a harbour', 'glass', 'a violin', 'autumn leaves', 'a bakery', 'the stars', 'a canal', 'wool', 'a storm at sea',
               'a kitchen', 'a railway station', 'a orchard', 'caves', 'a pond', 'a village fair', 'sunrise']
TEMPLATES = ['Tell me about {}.', 'Write a short paragraph about {}.', 'What are three facts about {}?', 'Describe {} to a child.',
             'Why do people like {}?', 'Write a short poem about {}.', 'Explain how {} changed over time.',
             'Give two tips for someone visiting {}.']
g = torch.Generator().manual_seed(a.seed)
def questions(topics, n):
    qs = [t.format(x) for x in topics for t in TEMPLATES]
    qs = [qs[i] for i in torch.randperm(len(qs), generator=g).tolist() if qs[i] not in BENCH_QUESTIONS]
    return qs[:n]
fort = load_corpus('fortunes', 'en')                                  # train and calibration splits only; test is the benchmark's
train_quotes = [d for d in fort.train if 60 < len(d) < 240]
cal_quotes = [d for d in fort.calibration if 60 < len(d) < 240]
pick = lambda xs, n: [xs[i] for i in torch.randperm(len(xs), generator=g)[:n].tolist()]
encode = lambda text: tok(text, return_tensors='pt', add_special_tokens=False).input_ids[0]
train_prompts = ([encode(chat_prompt(tok, q)) for q in questions(TOPICS, a.train_questions)]
                 + [encode(q[:len(q) // 2]) for q in pick(train_quotes, a.train_openings)])
held_q = questions(HELD_TOPICS, a.heldout)
assert not set(held_q) & set(questions(TOPICS, 10 ** 6)) and not set(held_q) & BENCH_QUESTIONS
held_prompts = [encode(chat_prompt(tok, q)) for q in held_q] + [encode(q[:len(q) // 2]) for q in pick(cal_quotes, a.heldout)]

@torch.no_grad()
def continuations(prompts, n_new, batch):
    "The target's greedy continuation of each prompt (cut after EOS), batched by length with left padding."
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos_set))
    order, outs = sorted(range(len(prompts)), key=lambda i: len(prompts[i])), [None] * len(prompts)
    for b in range(0, len(order), batch):
        idx = order[b:b + batch]; L = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), L), pad); mask = torch.zeros(len(idx), L, dtype=torch.long)
        for r, i in enumerate(idx): ids[r, L - len(prompts[i]):] = prompts[i]; mask[r, L - len(prompts[i]):] = 1
        gen = target.generate(ids, attention_mask=mask, max_new_tokens=n_new, do_sample=False, top_k=None, top_p=None,
                              temperature=None, eos_token_id=eos, pad_token_id=pad)[:, L:]
        for r, i in enumerate(idx):
            c = gen[r].tolist(); stop = next((j for j, t in enumerate(c) if t in eos_set), None)
            outs[i] = torch.tensor(c if stop is None else c[:stop + 1])
        print(f'  generated {min(b + batch, len(order))}/{len(order)} ({time.perf_counter() - T0:.0f} s)', flush=True)
    return outs

t = time.perf_counter()
train_gen = continuations(train_prompts, a.gen_new, a.gen_batch)
held_gen = continuations(held_prompts, a.gen_new, a.gen_batch)
phase('target generations', t)
seqs = [torch.cat([p, c]) for p, c in zip(train_prompts, train_gen)]
stream = torch.cat(seqs)
gen_blocks = stream[:len(stream) // a.block_size * a.block_size].view(-1, a.block_size)
n_corpus = max(1, round(a.corpus_share * len(gen_blocks)))
corpus_blocks = token_blocks(tok, pick(list(fort.train), len(fort.train)), a.block_size, n_corpus)
blocks = torch.cat([gen_blocks, corpus_blocks])
calib = token_blocks(tok, list(fort.calibration), a.calib_len, a.calib_blocks)
val_ids = torch.cat([torch.cat([p, c]) for p, c in zip(held_prompts, held_gen)])   # validation NLL: the held-out continuations
print(f'training blocks: {len(gen_blocks)} of target generations ({sum(len(c) for c in train_gen)} generated tokens, '
      f'{len(train_prompts)} prompts) + {len(corpus_blocks)} of fortunes train split, {a.block_size} tokens each; '
      f'held-out: {len(held_prompts)} prompts, {sum(len(c) for c in held_gen)} continuation tokens', flush=True)

# ---- 2. the cost model -----------------------------------------------------------------------------------------------
@torch.no_grad()
def forward_ms(models, feeds, ctx=a.ctx, n=a.time_steps):
    "Median ms of a forward of `feed` new tokens after a `ctx`-token cache, for each (model, feed), interleaved round by round."
    ids = torch.randint(0, text_config(target).vocab_size, (1, ctx), generator=torch.Generator().manual_seed(1))
    caches = {}
    for key, m in models.items():
        caches[key] = DynamicCache(); m(ids, past_key_values=caches[key], use_cache=True, logits_to_keep=1)
    ts = {(k, f): [] for k in models for f in feeds}
    for _ in range(n):
        for k, m in models.items():
            for f in feeds:
                x = ids[:, :f]; t0 = time.perf_counter()
                m(x, past_key_values=caches[k], use_cache=True, logits_to_keep=f)
                ts[k, f].append(time.perf_counter() - t0); caches[k].crop(-f)
    return {kf: 1e3 * statistics.median(v) for kf, v in ts.items()}

@torch.no_grad()
def acceptance(draft, prompts=held_prompts, conts=held_gen) -> float:
    "Greedy acceptance, teacher-forced: how often the draft's argmax after a prefix of the target's greedy output is its next token."
    hit = n = 0
    for p, c in zip(prompts, conts):
        logits = draft(torch.cat([p, c])[None].to(draft.device), use_cache=False).logits[0, len(p) - 1:-1]
        hit += int((logits.argmax(-1).cpu() == c).sum()); n += len(c)
    return hit / n

def prediction(alpha, c, t_draft, t_verify):
    "Per K: (analytic s(a,K,c), s_meas with the measured verification time of K+1 tokens)."
    return {K: (expected_speedup(alpha, K, c), expected_tokens_per_call(alpha, K) * t_verify[1] / (K * t_draft + t_verify[K + 1]))
            for K in range(1, a.kmax + 1)}

shapes = []
for s in a.candidates:
    L, h, i, H = map(int, s.split('x')); shapes.append(dict(layers=L, hidden=h, intermediate=i, heads=H))
t = time.perf_counter()
cfg0 = text_config(target)
depth_cache = {}                                   # pruned to the deepest candidate once; shallower ones pruned further from it
def build(shape):
    "Minitron depth pruning to `layers` (drop-one calibration loss), then width pruning to the shape (activation importance)."
    deep = max(x['layers'] for x in shapes)
    if deep not in depth_cache:
        depth_cache[deep] = prune_depth_minitron(copy.deepcopy(target), calib, len(decoder_layers(target)) - deep)
    m = copy.deepcopy(depth_cache[deep])
    if shape['layers'] < deep: m = prune_depth_minitron(m, calib, deep - shape['layers'])
    width = {k: shape[v] for k, v, full in [('hidden', 'hidden', cfg0.hidden_size), ('intermediate', 'intermediate', cfg0.intermediate_size),
                                             ('heads', 'heads', cfg0.num_attention_heads)] if shape[v] != full}
    if width: m = prune_minitron_width(m, calib, width)
    return m.eval()

students = [build(s) for s in shapes]
phase('Minitron depth + width pruning of the candidates', t)
t = time.perf_counter()
costs = forward_ms({'target': target, **{f'c{j}': m for j, m in enumerate(students)}}, range(1, a.kmax + 2))
t_verify = {f: costs['target', f] for f in range(1, a.kmax + 2)}
print('target forward after a %d-token cache (ms): ' % a.ctx + ', '.join(f'{f} tok {v:.1f}' for f, v in t_verify.items()))
phase('cost timing', t)

def kd(student, steps, seed):
    cfg = LMTrainConfig(steps=steps, batch_size=a.batch_size, block_size=a.block_size, lr=a.lr, warmup_steps=min(10, steps),
                        eval_every=min(a.eval_every, steps), val_tokens=len(val_ids), seed=seed)
    student.train()
    r = retrain(student, blocks, val_ids, cfg, teacher=target, temperature=a.temperature, method='draft-kd')
    student.eval(); return r

rows = []
for j, (shape, m) in enumerate(zip(shapes, students)):
    t = time.perf_counter()
    a0 = acceptance(m)
    t_kd = time.perf_counter(); r = kd(m, a.probe_steps, a.seed); t_kd = time.perf_counter() - t_kd
    alpha = acceptance(m)
    c = costs[f'c{j}', 1] / t_verify[1]
    pred = prediction(alpha, c, costs[f'c{j}', 1], t_verify)
    kbest = max(pred, key=lambda K: pred[K][1])
    rows.append(dict(shape=a.candidates[j], params=sum(p.numel() for p in m.parameters()), draft_ms=costs[f'c{j}', 1], c=c,
                     a_pruned=a0, a=alpha, probe_steps=a.probe_steps, probe_wall_s=round(t_kd, 1),
                     val_nll=r.best_val_nll, k_best=kbest, s_best=pred[kbest][1], s_analytic_at_k=pred[kbest][0], pred=pred))
    print(f'candidate {a.candidates[j]}: {rows[-1]["params"] / 1e6:.1f}M params, draft {costs[f"c{j}", 1]:.2f} ms/token, c={c:.3f}, '
          f'a {a0:.3f} pruned -> {alpha:.3f} after {a.probe_steps} KD steps (val NLL {r.best_val_nll:.3f}), '
          f'{r.step_time:.1f} s/step', flush=True)
    phase(f'probe {a.candidates[j]}', t)

print('\npredicted speedup over plain greedy, per K: analytic s(a,K,c) / with measured verification time s_meas')
print(f"{'shape':>14} | {'c':>5} | {'a':>5} | " + ' | '.join(f'K={K:<9}' for K in range(1, a.kmax + 1)))
for r in rows:
    print(f"{r['shape']:>14} | {r['c']:5.3f} | {r['a']:5.3f} | " + ' | '.join(f'{r["pred"][K][0]:4.2f}/{r["pred"][K][1]:4.2f}' for K in range(1, a.kmax + 1)))
best = max(range(len(rows)), key=lambda j: rows[j]['s_best'])
print(f"\nchosen from the measured numbers above (c timed here, a measured on held-out target continuations after "
      f"{a.probe_steps} KD steps each): {rows[best]['shape']} (best s_meas {rows[best]['s_best']:.2f} at K={rows[best]['k_best']})", flush=True)

# ---- 4. full KD of the kept candidate, final numbers, save and register -----------------------------------------------
draft = students[best]; del students
t = time.perf_counter()
left = a.budget_min * 60 - (time.perf_counter() - T0) - 240             # keep ~4 min for the final measurements and saving
per_step = rows[best]['probe_wall_s'] / a.probe_steps                   # measured: steps plus evaluations
steps = max(a.eval_every, min(a.steps, int(left / per_step)))
print(f'full KD: {steps} steps ({per_step:.1f} s/step measured in the probe, {left / 60:.1f} min of the budget left)', flush=True)
r = kd(draft, steps, a.seed + 1)                       # another seed: the continuation reads the blocks in another order
phase('full KD', t)
t = time.perf_counter()
alpha = acceptance(draft)
c_ms = forward_ms({'target': target, 'draft': draft}, range(1, a.kmax + 2))
t_verify = {f: c_ms['target', f] for f in range(1, a.kmax + 2)}
c = c_ms['draft', 1] / t_verify[1]
pred = prediction(alpha, c, c_ms['draft', 1], t_verify)
k_star = max(pred, key=lambda K: pred[K][1]); k_star_analytic = max(pred, key=lambda K: pred[K][0])
print(f'final: a={alpha:.3f} on held-out target continuations, draft {c_ms["draft", 1]:.2f} ms/token, target {t_verify[1]:.2f} ms '
      f'(c={c:.3f}); best K by s_meas K*={k_star} (predicted x{pred[k_star][1]:.2f}; analytic s there x{pred[k_star][0]:.2f}); '
      f'best K by the analytic formula {k_star_analytic} (x{pred[k_star_analytic][0]:.2f})')
with torch.no_grad():                                    # a real run on held-out prompts (not the benchmark's)
    chk = [held_prompts[0], held_prompts[a.heldout]]
    t1 = time.perf_counter(); ref = [autoregressive_generate(target, None, p, 48, eos_token_id=eos) for p in chk]; plain_s = time.perf_counter() - t1
    t1 = time.perf_counter(); got = [speculative_generate(target, ModelDrafter(draft), p, 48, k=k_star, eos_token_id=eos) for p in chk]
    spec_s = time.perf_counter() - t1
n_tok = sum(len(x[0]) for x in ref); same = all(torch.equal(x[0], y[0]) for x, y in zip(ref, got))
real_alpha = sum(sum(s.betas) for _, s in got) / max(1, sum(len(s.betas) for _, s in got))
print(f'check on {len(chk)} held-out prompts, K={k_star}: speculative {sum(len(x[0]) for x in got) / spec_s:.1f} tok/s vs the same loop '
      f'without a draft {n_tok / plain_s:.1f} tok/s (x{plain_s / spec_s:.2f}); alpha in the run {real_alpha:.3f}; identical {same}')
phase('final measurements', t)

out.mkdir(parents=True, exist_ok=True)
draft.save_pretrained(out); tok.save_pretrained(out)
listed = local_models().get(name)
if a.no_register: pass
elif listed is None: register_model(name, out, f'Minitron depth+width pruned, KD-distilled draft of {a.model} (benchmarks/make_draft.py)', draft_for=str(a.model))
elif Path(listed['path']) != out.resolve(): raise SystemExit(f'{name} is already listed at {listed["path"]}: pass another --name')
info = dict(name=name, target=str(a.model), shape=rows[best]['shape'], config={k: getattr(text_config(draft), k) for k in
            ('num_hidden_layers', 'hidden_size', 'intermediate_size', 'num_attention_heads', 'num_key_value_heads', 'head_dim')},
            params=sum(p.numel() for p in draft.parameters()), c=c, a=alpha, k_star=k_star, k_star_analytic=k_star_analytic,
            predicted_speedup=pred[k_star][1], predicted_speedup_analytic=pred[k_star][0], draft_ms=c_ms['draft', 1],
            target_ms={f: v for f, v in t_verify.items()}, ctx=a.ctx, probe_steps=a.probe_steps, steps=steps,
            best_step=r.best_step, val_nll=r.best_val_nll, train_tokens=int(blocks.numel()), check_speedup=plain_s / spec_s,
            check_alpha=real_alpha, check_identical=same,
            candidates=[{k: v for k, v in x.items() if k != 'pred'} for x in rows], phases_s=phases,
            seconds=round(time.perf_counter() - T0, 1), args=vars(a))
(out / 'draft.json').write_text(json.dumps(info, indent=1))
print(f'saved {out} and listed it as {name!r}; drafts for {a.model}: {drafts_for(str(a.model))}')
print(f'[time] total {time.perf_counter() - T0:.0f} s; phases {phases}')
