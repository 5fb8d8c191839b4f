"""hqq (Half-Quadratic Quantization, calibration-free) against our RTN, GPTQ and OmniQuant at the same bits and groups, in
one run, on the embedded model (SmolLM2-135M-Instruct), fortunes-en calibration blocks and test tokens (issue #22 item 3,
"hqq where it fits"). hqq is the calibration-free peer: the fair comparison is with our RTN (same grid: asymmetric, groups
of `--group` inputs, round to nearest), against which hqq's proximal solver of the zero points is its whole method; GPTQ
and OmniQuant (both use calibration tokens) are printed beside it for scale.

    .venv/bin/python benchmarks/quant_hqq.py [--configs w3g64 w2g64] [--calib-blocks 8] [--eval-tokens 2048] [--omni-epochs 2]

Why not W4 g32: the embedded model's decoder weights come from a Q4_1 GGUF (4-bit grid in groups of 32), so any 4-bit g32
quantizer is lossless on it and proves nothing; g64 divides every linear of the model, g128 does not.
The peer runs in the 'hqq' peer env and is evaluated THERE by a plain loop on the same token ids and context; the FP
perplexity of both loops is printed as a sanity check (they must agree to 1e-3). Times (quantization only) are printed,
never asserted; the peer runs first, then ours, each with the machine's threads.
"""
import argparse, copy, json, tempfile, time
from pathlib import Path
import torch
from llm_lab.models import fetch_model, load_model
from llm_lab.data import load_corpus, token_blocks, token_stream
from llm_lab.evaluate import perplexity
from llm_lab.peers import run_peer
from llm_lab.quant import QuantSpec, quantize_rtn, quantize_gptq, quant_bits, dequantized_weights
from llm_lab.quant.omniquant import quantize_omniquant
from quant_peers2 import clock        # wall and user-CPU seconds of a call, as the other quantization benchmarks time it


def parse(cfg: str) -> tuple[int, int]:
    "'w3g64' -> (3, 64)."
    b, g = cfg.lower().lstrip('w').split('g')
    return int(b), int(g)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--configs', nargs='+', default=['w3g64', 'w2g64'])
    ap.add_argument('--calib-blocks', type=int, default=8); ap.add_argument('--calib-len', type=int, default=256)
    ap.add_argument('--eval-tokens', type=int, default=2048); ap.add_argument('--context', type=int, default=512)
    ap.add_argument('--omni-epochs', type=int, default=2, help='OmniQuant (LWC) epochs; 0 leaves it out')
    a = ap.parse_args()
    configs = [parse(c) for c in a.configs]
    for b, g in configs:
        if b not in (2, 3, 4, 8): raise SystemExit(f"hqq quantizes to 2, 3, 4 or 8 bits, not {b}")
        if (b, g) in ((4, 32), (8, 32)): raise SystemExit(f"W{b} g32 is lossless on the embedded model (a Q4_1 GGUF): it proves nothing")
    dense, tok = load_model('smollm2-135m-instruct', dtype='float32')
    corpus = load_corpus('fortunes', 'en')
    calib = token_blocks(tok, list(corpus.calibration), a.calib_len, a.calib_blocks)
    eval_ids = token_stream(tok, list(corpus.test), a.eval_tokens)
    ppl = lambda m: perplexity(m, tok, eval_ids, context=a.context).ppl
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; calibration {tuple(calib.shape)} fortunes-en tokens; "
          f"test {len(eval_ids)} tokens, context {a.context}; configs {', '.join(a.configs)}")

    d = Path(tempfile.mkdtemp(prefix='hqq_peer_'))
    runs = [r for b, g in configs for r in (dict(tag=f'w{b}g{g}', bits=b, group=g), dict(tag=f'w{b}g{g}_rz', bits=b, group=g, round_zero=True))]
    spec = dict(model_dir=str(fetch_model()), eval_ids=eval_ids.tolist(), context=a.context, runs=runs, out=str(d / 'out.json'))
    t0 = time.perf_counter()
    peer = run_peer('hqq', Path(__file__).parent / 'peers' / 'hqq_quant.py', spec, timeout=7200)
    print(f"peer env run ({peer.get('hqq_version')}): {time.perf_counter() - t0:.0f} s (env start, model load and perplexities included)")

    fp = ppl(dense)
    print(f"\nFP perplexity: ours (llm_lab.evaluate.perplexity) {fp:.5f}, peer loop {peer['fp']['ppl']:.5f}, "
          f"|diff| {abs(fp - peer['fp']['ppl']):.2e} ({'agree' if abs(fp - peer['fp']['ppl']) < 1e-3 else 'DISAGREE'} to 1e-3)")
    ours = {}
    def run_ours(tag, fn):
        m, wall, cpu = clock(lambda: fn(copy.deepcopy(dense)))
        with dequantized_weights(m): p = ppl(m)
        ours[tag] = dict(ppl=p, wall_s=wall, cpu_s=cpu, bpw=quant_bits(m)['bits_per_weight'])
        print(f"  ours {tag}: " + ', '.join(f'{k} {v:.3f}' for k, v in ours[tag].items()), flush=True)
    for b, g in configs:
        spec = QuantSpec(b, g)
        run_ours(f'rtn w{b}g{g}', lambda m: quantize_rtn(m, None, spec))
        run_ours(f'rtn_fz w{b}g{g}', lambda m: quantize_rtn(m, None, QuantSpec(b, g, zero='float')))
        run_ours(f'gptq w{b}g{g}', lambda m: quantize_gptq(m, calib, spec))
        if a.omni_epochs: run_ours(f'omniquant w{b}g{g}', lambda m: quantize_omniquant(m, calib, spec, epochs=a.omni_epochs))

    head = f"| config | method | calibration | ppl | x hqq ppl | bits/weight | quantize wall s | x hqq wall |"
    rows = [head, '|---|---|---|---|---|---|---|---|', f"| - | full precision | - | {fp:.3f} | | 32 | | |"]
    for b, g in configs:
        P = peer[f'w{b}g{g}']
        rows.append(f"| W{b} g{g} | hqq (peer, optimize=True, float zero: its default) | none | {P['ppl']:.3f} | 1.000 | {P['bpw']:.3f} | {P['wall_s']:.1f} | 1.00 |")
        R = peer.get(f'w{b}g{g}_rz')
        if R: rows.append(f"| W{b} g{g} | hqq (peer, optimize=True, round_zero=True) | none | {R['ppl']:.3f} | {R['ppl'] / P['ppl']:.3f} | {R['bpw']:.3f} | {R['wall_s']:.1f} | {R['wall_s'] / P['wall_s']:.2f} |")
        for meth, cal in (('rtn_fz', 'none'), ('rtn', 'none'), ('gptq', f'{len(calib)} x {a.calib_len}'), ('omniquant', f'{len(calib)} x {a.calib_len}')):
            O = ours.get(f'{meth} w{b}g{g}')
            label = {'rtn_fz': 'rtn, float zero (hqq without its solver)', 'rtn': 'rtn, integer zero'}.get(meth, meth)
            if O: rows.append(f"| W{b} g{g} | ours {label} | {cal} | {O['ppl']:.3f} | {O['ppl'] / P['ppl']:.3f} | {O['bpw']:.3f} | "
                              f"{O['wall_s']:.1f} | {O['wall_s'] / P['wall_s']:.2f} |")
    print('\n' + '\n'.join(rows))
    print(f"\nFP perplexity: ours {fp:.5f}, peer loop {peer['fp']['ppl']:.5f} "
          f"({'agree' if abs(fp - peer['fp']['ppl']) < 1e-3 else 'DISAGREE'} to 1e-3). Read the hqq rows against 'rtn, float zero': the same "
          "grid (min-max, real-valued zero point per group) without hqq's solver; 'rtn, integer zero' puts the zero point on the code grid "
          "(0 exactly representable), which on this model matters more than any solver.")
    print("\nbits/weight: ours from quant_bits (packed codes, float16 scales, integer zero points); hqq: what it holds here, its "
          "packed codes (3-bit: 10 codes per int32 word, 3.2 bits per code) and a float32 scale and zero per group "
          f"(with them in float16, as hqq ships them on a GPU: " + ', '.join(f"W{b} g{g} {peer[f'w{b}g{g}']['bpw_fp16_meta']:.3f}" for b, g in configs)
          + "). hqq's zero points are real numbers (round_zero=False, its default), ours integers on the code grid.")
    (d / 'results.json').write_text(json.dumps(dict(fp=fp, ours=ours, peer=peer), indent=1))
    print(f"all numbers: {d / 'results.json'}")


if __name__ == '__main__':
    main()
