"""Benchmark: decode speed and memory of the lab's KV caches against the peers, measured in the same run.

    .venv/bin/python benchmarks/kv_decode.py [--model smollm2-135m-instruct] [--prompt 2048] [--new 64] [--repeats 5] [--cost-rounds 9] [--no-kvpress] [--readme]

One prompt from the test split, greedy decoding of `--new` tokens through a fresh cache each time, in `--repeats` rounds
that time every cache once, the order rotated (median tokens/s over the rounds; kvpress runs its rounds in its own env
first). Ours: KIVI-2 and -4, KVQuant-2/3/4 (calibrated on 4 x 512 tokens), ThinK 0.4, ThinK 0.4 + KIVI-2. Peers: the full
`DynamicCache`, transformers' quantized cache (quanto, 2 bits, KIVI's group and residual), and kvpress (ThinKPress 0.4 and
SnapKVPress 0.4, in kvpress's own env, transformers 5.2, same model directory and prompt). Prints tokens/s, ratios of
ours to each peer, the per-round ratio to quanto-2 (lowest and highest over the rounds: the noise of this run), bits per represented element (everything stored; fp16 = 16), the MiB those bits count, the bytes
really held (every tensor reachable from the cache object, in all and per token: for KVQuant this includes the
calibration's per-layer datatypes with their level tables for the fused read, and the shared RoPE cos/sin table
of the positions seen), and how many
greedy tokens equal the full cache's. A second table times the cache alone: after the prompt, every layer's `update`
of a decode step (store one token, read everything back) without the model, in `--cost-rounds` rotated rounds, so the
linears (the same for every cache, and most of a step) and their noise do not blur the difference between caches.
`--readme` writes both tables into README.md (the `kv_decode` block).
"""
import argparse, statistics, sys, tempfile, time, warnings
from pathlib import Path
import torch
from transformers import DynamicCache
from llm_lab.core import lab_root
from llm_lab.models import load_model, fetch_model, model_info
from llm_lab.data import load_corpus, token_stream, token_blocks
from llm_lab.evaluate import decode_speed, greedy_tokens, tensor_bytes, interleaved_decode_speed, round_ratios
from llm_lab.kv import KVCache, RecordingCache
from llm_lab.kv.kivi import KIVICache, quanto_cache, quanto_refusal
from llm_lab.kv.kvquant import capture_kv, calibrate_kvquant, KVQuantCache
from llm_lab.kv.think import ThinKCache

warnings.filterwarnings('ignore')
ap = argparse.ArgumentParser()
ap.add_argument('--model', default='smollm2-135m-instruct'); ap.add_argument('--prompt', type=int, default=2048)
ap.add_argument('--new', type=int, default=64); ap.add_argument('--repeats', type=int, default=5)
ap.add_argument('--no-kvpress', action='store_true'); ap.add_argument('--cost-rounds', type=int, default=9); ap.add_argument('--readme', action='store_true')
a = ap.parse_args()
lm, tok = load_model(a.model)
info = model_info(lm)
corpus = load_corpus('fortunes', 'en')
ids = token_stream(tok, list(corpus.test), a.prompt)[: a.prompt]
acts = capture_kv(lm, token_blocks(tok, list(corpus.calibration), 512, 4))
kvq = {b: calibrate_kvquant(acts, b, max_points=65536) for b in (2, 3, 4)}
ours = {'kivi2': lambda: KIVICache(2, 32, 128), 'kivi4': lambda: KIVICache(4, 32, 128),
        **{f'kvquant{b}': (lambda b=b: KVQuantCache(kvq[b])) for b in (2, 3, 4)},
        'think40': lambda: ThinKCache(lm, 0.4), 'kivi2+think40': lambda: ThinKCache(lm, 0.4, quant=KIVICache(2, 32, 128))}
peers = {'fp': DynamicCache, 'quanto2': lambda: quanto_cache(lm, 2, 32, 128)}
if quanto_refusal(lm):      # transformers' quantized cache refuses sliding-window layers (Gemma 3, Mistral)
    print(f"quanto2 left out: {quanto_refusal(lm)}"); del peers['quanto2']
elements = 2 * info['layers'] * info['kv_heads'] * info['head_dim'] * (a.prompt + a.new)
ref = greedy_tokens(lm, ids, a.new).flatten()[-a.new:]
rows = {}
if not a.no_kvpress:       # first: the peer env fails fast if it cannot run
    from llm_lab.peers import run_peer
    with tempfile.TemporaryDirectory() as d:
        kp = run_peer('kvpress', lab_root() / 'benchmarks' / 'peers' / 'kvpress_presses.py',
                      dict(model_dir=str(fetch_model(a.model)), decode=dict(prompt_ids=ids.tolist(), new_tokens=a.new, repeats=a.repeats),
                           threads=torch.get_num_threads(), out=f'{d}/out.json',
                           presses={'kvpress_none': [None, {}], 'kvpress_think40': ['ThinKPress', dict(key_channel_compression_ratio=0.4)],
                                    'kvpress_snapkv40': ['SnapKVPress', dict(compression_ratio=0.4)]}), timeout=3600)
    for name, r in kp.items():
        rows[name] = dict(tok_s=r['tokens_per_s'], bits=16 * r['stored'] / r['represented'], mib=float('nan'),
                          same=sum(x == y for x, y in zip(r['tokens'], ref.tolist())))
factories, last = {**peers, **ours}, {}
def timed(name, prompt, new):
    "One decode through a fresh cache of `name`'s; the last cache made is kept for the memory columns."
    def make(): last[name] = factories[name](); return last[name]
    return decode_speed(lm, prompt, new, cache_factory=make)
# rounds: every cache once per round, the order rotated, so a slow spell of the machine lands on all of them alike
speeds = interleaved_decode_speed({n: n for n in factories}, ids, a.new, a.repeats, measure=timed)
for name, make in factories.items():
    c = last[name]
    held = tensor_bytes(c)
    bits = c.bits_per_element() if isinstance(c, KVCache) else (16.0 if name == 'fp' else 8 * held / elements)
    same = (greedy_tokens(lm, ids, a.new, cache=make()).flatten()[-a.new:] == ref).sum().item()
    rows[name] = dict(tok_s=statistics.median(speeds[name]), bits=bits, mib=held / 2 ** 20, same=same)
print(f"{a.model}, {a.prompt}-token prompt, {a.new} new tokens, greedy, median of {a.repeats}, {torch.get_num_threads()} threads, "
      f"device {lm.device}; the full cache holds the model's {next(lm.parameters()).dtype}, bits/elt count it as fp16 = 16")
peer_names = [n for n in ('fp', 'quanto2', 'kvpress_none', 'kvpress_think40') if n in rows]
by_round = 'quanto2' in speeds
lines = [f"| cache | tok/s | " + ' | '.join(f'x {p}' for p in peer_names) + (" | x quanto2 by round" if by_round else '')
         + " | bits/elt | MiB counted | MiB held | KiB/token held | same tokens |", '|' + '---|' * (7 + len(peer_names) + by_round)]
for name, r in rows.items():
    ratios = ' | '.join(f"{r['tok_s'] / rows[p]['tok_s']:.2f}" for p in peer_names)
    if by_round:
        rr = round_ratios(speeds, name, 'quanto2') if name in speeds else None
        ratios += ' | ' + (f"{min(rr):.2f}-{max(rr):.2f}" if rr else '-')
    lines.append(f"| {name} | {r['tok_s']:.2f} | {ratios} | {r['bits']:.2f} | {r['bits'] * elements / 8 / 2 ** 20:.2f} | {r['mib']:.2f} | {1024 * r['mib'] / (a.prompt + a.new):.2f} | {r['same']}/{a.new} |")
print('\n'.join(lines))

# The cache alone: the decode step's update (store the new token, read everything back) through every layer, timed
# without the model, so the linears' share of the step (the same for every cache) and its noise drop out.
rec = RecordingCache()
with torch.no_grad(): lm(ids[None], past_key_values=rec, use_cache=True)
new_kv = [tuple(t[:, :, -1:].clone() for t in rec.recorded(i)) for i in range(info['layers'])]   # the last token's, as a next one
del rec
filled = {}
for name, make in factories.items():
    filled[name] = make()
    with torch.no_grad(): lm(ids[None], past_key_values=filled[name], use_cache=True)
def cache_steps(name, _prompt, steps):
    "`steps` decode-step updates of `name`'s filled cache: steps per second, as `decode_speed` reports tokens/s."
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            for i, (k, v) in enumerate(new_kv): filled[name].update(k, v, i)
    return dict(tokens_per_s=steps / (time.perf_counter() - t0))
rates = interleaved_decode_speed({n: n for n in filled}, None, 8, a.cost_rounds, measure=cache_steps)   # rounds, order rotated, as above
cost = {n: [1e3 / x for x in xs] for n, xs in rates.items()}       # ms per step
cost_lines = ["| cache | ms/step in the cache | x quanto2 | x quanto2 by round |", '|---|---|---|---|']
for n, ms in cost.items():
    q = cost.get('quanto2')
    rr = [x / y for x, y in zip(ms, q)] if q else None
    cost_lines.append(f"| {n} | {statistics.median(ms):.1f} | {statistics.median(ms) / statistics.median(q):.2f} | {min(rr):.2f}-{max(rr):.2f} |" if q
                      else f"| {n} | {statistics.median(ms):.1f} | - | - |")
print(f"\nThe cache alone, after the {a.prompt}-token prompt: every layer's update (write the new token, read all back), "
      f"median of {a.cost_rounds} rounds of 8 steps (x quanto2: time over quanto-2's, lower is faster)")
print('\n'.join(cost_lines))
if a.readme:
    from readme import update_readme
    update_readme('kv_decode', f"{a.model}, {a.prompt}-token prompt, {a.new} new tokens, greedy, median of {a.repeats} rounds; "
                  "x peer = our tokens/s over the peer's, same run; by round: lowest-highest of the per-round ratio\n\n" + '\n'.join(lines)
                  + f"\n\nThe cache alone (every layer's update of a decode step, without the model), median of {a.cost_rounds} rounds; "
                  "x quanto2 = our time over quanto-2's (lower is faster)\n\n" + '\n'.join(cost_lines), 'python ' + ' '.join(['benchmarks/kv_decode.py', *sys.argv[1:]]))
