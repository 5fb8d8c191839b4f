"""Benchmark and parity: our Wanda and SparseGPT against llmcompressor's modifiers (its own env, transformers 5.17) on the same
model, calibration tokens and sparsity. Prints per-method mask agreement, test perplexity of both pruned models and the
pruning wall times with their ratio.

    .venv/bin/python benchmarks/prune_llmcompressor.py [--sparsity 0.5] [--calib-blocks 32] [--calib-len 256]
"""
import argparse, copy, json, tempfile, time
from pathlib import Path
import torch
from llm_lab.models import fetch_model, load_model
from llm_lab.data import load_corpus, token_blocks, token_stream
from llm_lab.evaluate import perplexity
from llm_lab.peers import run_peer
from llm_lab.prune.unstructured import prune_wanda, prune_sparsegpt, parse_sparsity

ap = argparse.ArgumentParser()
ap.add_argument('--sparsity', default='0.5'); ap.add_argument('--calib-blocks', type=int, default=32); ap.add_argument('--calib-len', type=int, default=256)
ap.add_argument('--eval-tokens', type=int, default=8192); ap.add_argument('--context', type=int, default=512)
ap.add_argument('--reuse', help="a previous run's peer output folder (its printed path): skip the peer run")
a = ap.parse_args()
sp = a.sparsity if ':' in a.sparsity else float(a.sparsity)
s = parse_sparsity(sp)
dense, tok = load_model('smollm2-135m-instruct')
corpus = load_corpus('fortunes', 'en')
calib = token_blocks(tok, list(corpus.calibration), a.calib_len, a.calib_blocks)
eval_ids = token_stream(tok, list(corpus.test), a.eval_tokens)
ppl = lambda m: perplexity(m, tok, eval_ids, context=a.context).ppl
d = Path(a.reuse or tempfile.mkdtemp(prefix='llmc_'))
print(f"peer outputs: {d}")
spec = dict(model_dir=str(fetch_model()), calib=calib.tolist(), sparsity=s.ratio,
            mask_structure=f'{s.n}:{s.m}' if s.nm else '0:0', blocksize=128, damp=0.01, out_dir=str(d), out=str(d / 'out.json'))
if a.reuse: peer = json.loads((d / 'out.json').read_text())
else:
    t0 = time.perf_counter(); peer = run_peer('llmcompressor', Path(__file__).parent / 'peers' / 'llmcompressor_prune.py', spec, timeout=3600)
    print(f"peer env run: {time.perf_counter() - t0:.0f} s (model loads and env start included)")
print(f"dense ppl {ppl(dense):.2f}")
for method, fn in [('wanda', prune_wanda), ('sparsegpt', prune_sparsegpt)]:
    ours = copy.deepcopy(dense)
    t0 = time.perf_counter(); fn(ours, calib, sp); wall = time.perf_counter() - t0
    theirs_masks = torch.load(d / f'{method}_masks.pt')
    agree, total = 0, 0
    for n, m in ours.named_modules():
        if n in theirs_masks:
            mine = (m.weight == 0).cpu()
            agree += (mine == theirs_masks[n]).sum().item(); total += mine.numel()
    tok.save_pretrained(d / method)                                  # the peer saves weights only
    theirs, _ = load_model(str(d / method), dtype='float32')
    print(f"{method:>9}: mask agreement {agree / total:.4f} over {len(theirs_masks)} matrices; ppl ours {ppl(ours):.2f}, llmcompressor {ppl(theirs):.2f}; "
          f"pruning wall ours {wall:.1f} s, llmcompressor {peer[method]['wall_s']:.1f} s (x{peer[method]['wall_s'] / wall:.2f})")
