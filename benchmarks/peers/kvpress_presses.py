"""Runs in the kvpress peer env (transformers 5.2): continuation log-probs after a prompt compressed by kvpress presses.

Spec (JSON, argv[1]): model_dir, windows (lists of token ids), prompt (tokens read in one forward, under the press),
chunk (continuation tokens per forward), presses ({name: [class name, kwargs]}, null class = no press), threads, out.
Writes {name: {logps: [[...] per window], stored: [...], represented: [...], seconds}} to `out`.
With `decode` ({prompt_ids, new_tokens, repeats}) instead of windows: greedy decoding after a pressed prompt,
{name: {tokens_per_s (median over repeats), tokens, stored, represented}}."""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, DynamicCache
import kvpress

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec.get('threads', 2))
model = AutoModelForCausalLM.from_pretrained(spec['model_dir'], dtype=torch.float32).eval()
P, chunk = spec.get('prompt'), spec.get('chunk')

@torch.no_grad()
def continuation(press, ids):
    "Log-prob of every token after the prompt; the cache's stored and represented key/value elements at the end."
    ids = torch.tensor(ids)[None]
    cache = DynamicCache()
    if press is None: logits = [model(ids[:, :P], past_key_values=cache).logits[:, -1:]]
    else:
        with press(model): logits = [model(ids[:, :P], past_key_values=cache).logits[:, -1:]]
    for s in range(P, ids.shape[1] - 1, chunk):
        logits.append(model(ids[:, s:min(s + chunk, ids.shape[1] - 1)], past_key_values=cache).logits)
    lp = torch.log_softmax(torch.cat(logits, 1).float(), -1)[0].gather(-1, ids[0, P:, None])[:, 0]
    stored = sum(l.keys.numel() + l.values.numel() for l in cache.layers)
    cfg = model.config
    hd = getattr(cfg, 'head_dim', None) or cfg.hidden_size // cfg.num_attention_heads
    represented = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * hd * (ids.shape[1] - 1)
    return lp.tolist(), stored, represented

@torch.no_grad()
def decode(press, ids, new_tokens):
    "Prefill under the press, then greedy decoding: (seconds for the new tokens, the tokens, stored, represented)."
    ids, cache = torch.tensor(ids)[None], DynamicCache()
    if press is None: out = model(ids, past_key_values=cache)
    else:
        with press(model): out = model(ids, past_key_values=cache)
    nxt, toks = out.logits[:, -1:].argmax(-1), []
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        toks.append(nxt.item()); nxt = model(nxt, past_key_values=cache).logits[:, -1:].argmax(-1)
    dt = time.perf_counter() - t0
    cfg = model.config
    hd = getattr(cfg, 'head_dim', None) or cfg.hidden_size // cfg.num_attention_heads
    represented = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * hd * (ids.shape[1] + new_tokens)
    return dt, toks, sum(l.keys.numel() + l.values.numel() for l in cache.layers), represented

out = {}
if 'decode' in spec:
    d = spec['decode']
    decode(None, d['prompt_ids'][:8], 2)                                  # warm-up
    for name, (cls, kw) in spec['presses'].items():
        press = None if cls is None else getattr(kvpress, cls)(**kw)
        runs = [decode(press, d['prompt_ids'], d['new_tokens']) for _ in range(d.get('repeats', 1))]
        secs = sorted(r[0] for r in runs)[len(runs) // 2]
        out[name] = dict(tokens_per_s=d['new_tokens'] / secs, tokens=runs[0][1], stored=runs[0][2], represented=runs[0][3])
    json.dump(out, open(spec['out'], 'w')); sys.exit(0)

for name, (cls, kw) in spec['presses'].items():
    press = None if cls is None else getattr(kvpress, cls)(**kw)
    t0 = time.perf_counter()
    runs = [continuation(press, w) for w in spec['windows']]
    out[name] = dict(logps=[r[0] for r in runs], stored=[r[1] for r in runs], represented=[r[2] for r in runs],
                     seconds=time.perf_counter() - t0)
json.dump(out, open(spec['out'], 'w'))
