"""Our AWQ-style, OmniQuant (LWC) and SmoothQuant + W8A8 against their peers, in one run, on the embedded model
(SmolLM2-135M-Instruct), fortunes-en calibration blocks and test tokens (issue #22 item 3):

1. our `quantize_awq` vs llmcompressor's AWQModifier (+ QuantizationModifier) at W3 g64 asymmetric;
2. our `quantize_omniquant` (LWC, a few epochs) vs auto-round's SignRound (llmcompressor's AutoRoundModifier, auto-round 0.15.1,
   CPU, few iterations) at W3 g64 asymmetric, with RTN at the same setting (ours and llmcompressor's) as the floor;
3. our `quantize_smoothquant` + W8A8 (per-channel symmetric weights, static per-tensor activations) vs llmcompressor's
   SmoothQuantModifier + QuantizationModifier at the same scheme (and both without smoothing).

The peers run in the 'llmcompressor' peer env (one subprocess for all of them) and are evaluated THERE, on the same token ids
and context, by a plain loop (non-overlapping windows, mean NLL of every predicted token); the FP perplexity of both loops is
printed as a sanity check (they must agree to 1e-3).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quant_peers2.py [--calib-blocks 8] [--calib-len 256] [--eval-tokens 2048]
        [--omni-epochs 2] [--ar-iters 50] [--skip-sq]

Times are printed (wall and user CPU of the quantize call; ratios ours / peer), never asserted.
"""
import argparse, copy, json, os, tempfile, time
from pathlib import Path
import torch
from llm_lab.models import fetch_model, load_model
from llm_lab.data import load_corpus, token_blocks, token_stream
from llm_lab.evaluate import perplexity
from llm_lab.peers import run_peer
from llm_lab.quant import QuantSpec, ActSpec, quantize_rtn, quant_bits, dequantized_weights
from llm_lab.quant.lowbit import quantize_awq
from llm_lab.quant.omniquant import quantize_omniquant
from llm_lab.quant.spike import quantize_smoothquant, quantize_spike

DIFFERENCES = """What differs by design (read in the peer env's site-packages):
AWQ (llmcompressor/modifiers/transform/awq/base.py) vs ours (llm_lab/quant/lowbit.py):
- scales: the peer's are SHARED by the linears reading one input (q/k/v after input_layernorm, gate/up after
  post_attention_layernorm, down after up, o after v when shapes allow — not here: GQA, v_proj out 192 != o_proj in 576) and
  folded into the previous op (norm weight / up_proj rows), so they cost no bits; ours are per linear, kept as an input scale in
  a ScaledQuantLinear (stored: counted in our bits/weight);
- objective: the peer minimises the MSE of the parent module's output (the whole attention block for q/k/v, the MLP for
  gate/up) on the calibration tokens; ours minimises each linear's output error tr(D H D^T) with H = X^T X;
- grid: the peer's duo_scaling=True uses s = x_mean^r / w_mean^(1-r) (w_mean: mean |W| normalised per group), r = i/(n_grid-1)
  in [0, 1]; ours s = x_mean^a, a = i/n_grid in [0, 0.95] (the official auto_scale.py);
- no clip search in either (llmcompressor 0.14 has no AutoAWQ auto_clip); the peer's weight grid is float32 scales + int8 zero point.
OmniQuant LWC (ours) vs auto-round SignRound (peer): the peer learns a rounding offset V in [-0.5, 0.5] per WEIGHT plus min/max
  clip scales per group with signed-SGD (lr 1/iters), `iters` steps of batch_size samples per block; ours learns only the two
  clipping factors per group (sigmoid, init 4) with AdamW lr 1e-2 for `epochs` passes over the calibration blocks (batch 1),
  rounding stays round-to-nearest. Both train block by block against the full-precision block output, quantized inputs.
SmoothQuant (llmcompressor/modifiers/smoothquant) vs ours: both smooth the norm-fed linears (scope='norm' here) with
  s = max|X|^a / max|W|^(1-a), a = 0.5, folded into the norm; W8 per-channel symmetric, A8 static per-tensor symmetric."""


def clock(fn):
    t0, c0 = time.perf_counter(), os.times().user
    r = fn()
    return r, time.perf_counter() - t0, os.times().user - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--calib-blocks', type=int, default=8); ap.add_argument('--calib-len', type=int, default=256)
    ap.add_argument('--eval-tokens', type=int, default=2048); ap.add_argument('--context', type=int, default=512)
    ap.add_argument('--bits', type=int, default=3); ap.add_argument('--group', type=int, default=64)
    ap.add_argument('--omni-epochs', type=int, default=2); ap.add_argument('--ar-iters', type=int, default=50)
    ap.add_argument('--ar-sym', action='store_true', help="also run the peer's auto-round and RTN symmetric (its asymmetric path is "
                    "broken in llmcompressor 0.14's AutoRoundModifier on this model: see the printed note)")
    ap.add_argument('--skip-sq', action='store_true'); ap.add_argument('--skip-ar', action='store_true')
    ap.add_argument('--reuse', help="a previous run's peer output folder: skip the peer run")
    a = ap.parse_args()
    dense, tok = load_model('smollm2-135m-instruct', dtype='float32')
    corpus = load_corpus('fortunes', 'en')
    calib = token_blocks(tok, list(corpus.calibration), a.calib_len, a.calib_blocks)
    eval_ids = token_stream(tok, list(corpus.test), a.eval_tokens)
    ppl = lambda m: perplexity(m, tok, eval_ids, context=a.context).ppl
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
          f"calibration {tuple(calib.shape)} fortunes-en tokens; test {len(eval_ids)} tokens, context {a.context}")
    b, g = a.bits, a.group
    runs = [dict(tag='fp', kind='fp'), dict(tag='rtn', kind='rtn', bits=b, group=g), dict(tag='awq', kind='awq', bits=b, group=g)]
    if not a.skip_ar: runs.append(dict(tag='autoround', kind='autoround', bits=b, group=g, iters=a.ar_iters, batch_size=min(8, len(calib))))
    if a.ar_sym and not a.skip_ar:
        runs += [dict(tag='rtn_sym', kind='rtn', bits=b, group=g, sym=True),
                 dict(tag='autoround_sym', kind='autoround', bits=b, group=g, iters=a.ar_iters, batch_size=min(8, len(calib)), sym=True)]
    if not a.skip_sq: runs += [dict(tag='w8a8', kind='smoothquant', alpha=None), dict(tag='sq_w8a8', kind='smoothquant', alpha=0.5)]
    d = Path(a.reuse or tempfile.mkdtemp(prefix='llmc_awq_ar_'))
    print(f"peer outputs: {d}")
    import threading
    box = {}
    if a.reuse: box['peer'] = json.loads((d / 'out.json').read_text())
    else:                  # the peer env runs in a subprocess WHILE ours run here (one core each with OMP_NUM_THREADS=1 on 2 cores)
        spec = dict(model_dir=str(fetch_model()), calib=calib.tolist(), eval_ids=eval_ids.tolist(), context=a.context, runs=runs,
                    out=str(d / 'out.json'))
        def peer_run():
            t0 = time.perf_counter()
            try: box['peer'] = run_peer('llmcompressor', Path(__file__).parent / 'peers' / 'llmcompressor_awq_autoround.py', spec, timeout=7200)
            except Exception as e: box['error'] = e
            box['wall'] = time.perf_counter() - t0
        th = threading.Thread(target=peer_run); th.start()
    fp = ppl(dense)
    ours = {}
    def run_ours(tag, fn, eval_fn=None):
        m = copy.deepcopy(dense)
        m, wall, cpu = clock(lambda: fn(m))
        if eval_fn: p = eval_fn(m)
        else:
            with dequantized_weights(m): p = ppl(m)
        try: bpw = quant_bits(m)['bits_per_weight']
        except Exception: bpw = float('nan')
        ours[tag] = dict(ppl=p, wall_s=wall, cpu_s=cpu, bpw=bpw)
        print(f"  ours {tag}: {ours[tag]}", flush=True)
    spec = QuantSpec(b, g)
    run_ours('rtn', lambda m: quantize_rtn(m, None, spec))
    run_ours('awq', lambda m: quantize_awq(m, calib, spec))
    if not a.skip_ar: run_ours('omniquant', lambda m: quantize_omniquant(m, calib, spec, epochs=a.omni_epochs))
    if not a.skip_sq:
        w8 = QuantSpec(8, None, sym=True); act = ActSpec(8, 'tensor', static=True)
        run_ours('w8a8', lambda m: quantize_spike(m, calib, w8, k=0, act=act), ppl)            # uniform W8A8: nothing kept
        run_ours('sq_w8a8', lambda m: quantize_smoothquant(m, calib, w8, alpha=0.5, act=act, scope='norm'), ppl)

    if not a.reuse:
        th.join()
        if 'error' in box: raise box['error']
        print(f"peer env run: {box['wall']:.0f} s for {len(runs)} runs (env start, model loads and peer perplexities included)")
    peer = box['peer']
    print(f"\nFP perplexity: ours (llm_lab.evaluate.perplexity) {fp:.5f}, peer loop {peer['fp']['ppl']:.5f}, |diff| {abs(fp - peer['fp']['ppl']):.2e}"
          f" ({'agree' if abs(fp - peer['fp']['ppl']) < 1e-3 else 'DISAGREE'} to 1e-3)\n")
    print(DIFFERENCES)
    pairs = [(f'RTN W{b} g{g}', 'rtn', 'rtn'), (f'AWQ W{b} g{g}', 'awq', 'awq')]
    if not a.skip_ar: pairs += [(f'OmniQuant {a.omni_epochs} ep vs AutoRound {a.ar_iters} it', 'omniquant', 'autoround')]
    if not a.skip_sq: pairs += [('W8A8 static, no smoothing', 'w8a8', 'w8a8'), ('SmoothQuant a=0.5 + W8A8', 'sq_w8a8', 'sq_w8a8')]
    head = (f"{'method (ours vs peer)':<36} {'ppl ours':>9} {'ppl peer':>9} {'o/p':>6} {'bits/w o/p':>13} {'o/p':>6} "
            f"{'wall o/p s':>15} {'o/p':>6} {'cpu o/p s':>15} {'o/p':>6}")
    print(f"\nFP ppl {fp:.3f}\n" + head + "\n" + '-' * len(head))
    for label, o, p in pairs:
        if o not in ours or p not in peer: continue
        O, P = ours[o], peer[p]
        bpw_o = f"{O['bpw']:.3f}/{P['bpw']:.3f}" if 'a8' not in o else '-'
        bpw_r = f"{O['bpw'] / P['bpw']:.3f}" if 'a8' not in o else '-'
        print(f"{label:<36} {O['ppl']:>9.3f} {P['ppl']:>9.3f} {O['ppl'] / P['ppl']:>6.3f} {bpw_o:>13} {bpw_r:>6} "
              f"{O['wall_s']:>7.1f}/{P['wall_s']:<7.1f} {O['wall_s'] / P['wall_s']:>6.2f} {O['cpu_s']:>7.1f}/{P['cpu_s']:<7.1f} {O['cpu_s'] / P['cpu_s']:>6.2f}")
    for t in ('rtn_sym', 'autoround_sym'):
        if t in peer: print(f"peer only, symmetric W{b} g{g}: {t} ppl {peer[t]['ppl']:.3f}, wall {peer[t]['wall_s']:.1f} s, cpu {peer[t]['cpu_s']:.1f} s")
    if 'autoround' in peer and 'rtn' in peer and peer['autoround']['ppl'] > peer['rtn']['ppl']:
        print(f"NOTE: the peer's asymmetric auto-round ({peer['autoround']['ppl']:.1f}) is worse than its own asymmetric RTN ({peer['rtn']['ppl']:.1f}); "
              "with iters=1 (no step taken, V=0, clip 1) it still is (270.9 vs 71.4 on 2x64 calibration tokens) while symmetric auto-round "
              "beats symmetric RTN (84.3 vs 149.4): the asymmetric path of llmcompressor 0.14's AutoRoundModifier / auto-round 0.15.1 "
              "(zero point or min/max hand-over) is broken here, so that row measures a bug, not SignRound. Run --ar-sym for a working peer.")
    print("bits/w: ours from quant_bits (packed codes + float16 scales + int zero points, + AWQ's stored input scales); peer: codes + its "
          "weight_scale (float32) and weight_zero_point at their in-memory dtypes (no checkpoint written). W8A8 rows: perplexity with "
          "activation fake-quant active; bits not compared. Peer times: oneshot() only (dataset tokenisation and pipeline tracing included). "
          "Ours and the peer run concurrently (one thread each): on a shared 2-core machine wall times carry contention, user CPU is the fairer ratio. "
          "The peer's auto-round is switched to float32 (amp off; it defaults to bfloat16 autocast on CPU).")
    (d / 'results.json').write_text(json.dumps(dict(fp=fp, ours=ours, peer=peer), indent=1))
    print(f"all numbers: {d / 'results.json'}")


if __name__ == '__main__':
    main()
