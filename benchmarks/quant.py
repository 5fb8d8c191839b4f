"""Benchmark and parity of the weight-quantization base (`llm_lab.quant`) against its peers, in one run, on the embedded model
(SmolLM2-135M-Instruct), fortunes-en calibration blocks and test tokens:

- GPTQ against llmcompressor's GPTQModifier (its own env, transformers 5.17) on the SAME calibration tokens and spec
  (asymmetric min-max grid with an integer zero point, blocksize 128, damping 0.01 of the mean diagonal, no act-order):
  share of identical integer codes per linear, max |difference| of the dequantized weights (absolute and in grid steps),
  perplexity of both, bits per weight and memory held (our packed `QuantLinear.memory_bits` vs the decoder tensors of the
  compressed checkpoint llmcompressor writes), quantize wall and user-CPU time and the ratio ours / peer;
- optimum-quanto's RTN (in-process) at qint4 / qint2, with quanto's own group sizes and with g64: the same table.

Our side is configured to llmcompressor's grid where the two differ by design (see PARITY below); our GPTQ as shipped (float16
scales, each group's grid computed when the loop reaches it) is printed too, against the same peer run.

    .venv/bin/python benchmarks/quant.py [--configs w4g64,w3g64,w4pc] [--f64 w3g64] [--shipped w3g64] [--noise w3g64] [--calib-blocks 16] [--calib-len 256]

Threads: torch's default (set OMP_NUM_THREADS to change it); the peer inherits the environment. Times are printed, never asserted.
"""
import argparse, copy, json, os, tempfile, time
from collections import defaultdict
from pathlib import Path
import torch
from llm_lab.models import fetch_model, load_model
from llm_lab.data import load_corpus, token_blocks, token_stream
from llm_lab.evaluate import perplexity
from llm_lab.peers import run_peer
from llm_lab.quant import (QuantSpec, QuantPlan, GPTQ_BITS, gptq, quantize_gptq, quantize_layerwise, quantize_rtn, quant_bits,
                           linear_modules, quantizable_linears, dequantized_weights)

PARITY = """Where llmcompressor 0.14 / compressed-tensors 0.19 differ from our GPTQ by design (read in its site-packages):
- grids: its weight observer (memoryless_minmax) computes every group's scale and zero point ONCE, from the original weights,
  before the column loop (GPTQModifier.on_sequential_epoch_end -> observe(); gptq_quantize.quantize_weight gets them as
  arguments); ours computes a group's grid when the loop reaches its first column, from the weights as updated by then.
  Matched here with gptq(..., static_groups=True);
- scales are kept in the weight dtype (float32 here: update_batch_qparams casts to module.weight.dtype); ours default to float16.
  Matched with QuantSpec(float_dtype='float32');
- zero point: an int8 zero point q_min - min/scale on the range widened to 0 (calculate_qparams) = our zero='int' shifted by
  2^(b-1); codes are compared as unsigned (q - q_min). Its scale and zero point are computed in float32 (the weight dtype): the
  scales come out bit-identical to ours on this model, but -min/scale rounds the other way in a few groups near a .5 tie (counted below
  the table), and GPTQ then differs along the rest of that row;
- arithmetic: its Hessian (sum of 2/n x x^T) and its column loop are float32 (helpers.GPTQ_PRECISION); ours accumulate X X^T in
  float64 and run the loop in float64. A float64 peer run (the module constant patched, nothing else) shows how much of the
  remaining gap is precision;
- actorder: its default is 'static' (act-order); set to None here (the brief's setting, ours act_order=False).
Everything else is the same algorithm: damping 0.01 * mean(diag H), dead inputs zeroed, Cholesky of H^-1 (upper), blocks of 128
with the lazy batch update, layer by layer with the quantized layer's outputs fed to the next (sequential pipeline), each
layer's Hessians taken from its full-precision forward.
How to read the codes column: GPTQ is a greedy column loop, so one code that rounds the other way changes the error spread over
the rest of its row, and one changed row changes the next layer's inputs and Hessians. Layer 0 (identical inputs) measures the
step itself; deeper layers measure how fast float-rounding-sized differences grow. The 'ours,H f32' row is that noise floor: our
GPTQ against itself with each Hessian rounded to float32 (a relative change of ~6e-8), nothing else changed."""

CONFIGS = {'w4g64': (4, 64), 'w3g64': (3, 64), 'w2g64': (2, 64), 'w4pc': (4, None), 'w3pc': (3, None)}


def clock(fn):
    "Run fn(); its result, wall seconds and user-CPU seconds of this process (all threads)."
    t0, c0 = time.perf_counter(), os.times().user
    r = fn()
    return r, time.perf_counter() - t0, os.times().user - c0


def gptq_static(model, calib, spec, blocksize, damp, hessian_f32=False):
    """Our GPTQ with every group's grid from the original weights, before the loop (llmcompressor's order). `hessian_f32`: each
    Hessian rounded to float32 first (a perturbation of float32's size: how far GPTQ's codes move under float rounding alone)."""
    h = (lambda x: x.float().double()) if hessian_f32 else (lambda x: x)
    step = lambda w, st, s, out: gptq(w, h(st.xtx), s, blocksize, damp, False, out, static_groups=True)
    return quantize_layerwise(model, calib, spec, step, hessian=True, bits=GPTQ_BITS, method='gptq (static groups)')


def peer_dequant(t):
    "llmcompressor's weight from its codes: (q - zp) * s in float32, as compressed-tensors' _dequantize."
    g = t['codes'].shape[1] // t['scale'].shape[1]
    return (t['codes'].float() - t['zero'].float().repeat_interleave(g, 1)) * t['scale'].repeat_interleave(g, 1)


def compare_llmc(model, theirs):
    "Per linear: share of identical codes, of identical scales and zero points, max |dequantized difference| (abs and in steps)."
    lins, rows = linear_modules(model), {}
    for n, t in theirs.items():
        qw, wt = lins[n].qweight(), peer_dequant(t)
        wo = lins[n].dequantized(torch.float32)
        g = wt.shape[1] // t['scale'].shape[1]
        d = (wo - wt).abs()
        rows[n] = dict(codes=(qw.codes == t['codes'].long()).float().mean().item(),
                       scales=(qw.scale.float() == t['scale']).float().mean().item(),
                       zeros=(qw.zero.long() == t['zero'].long()).float().mean().item(),
                       zeros_diff=(qw.zero.long() != t['zero'].long()).sum().item(), groups=qw.zero.numel(),
                       max_abs=d.max().item(), max_steps=(d / t['scale'].repeat_interleave(g, 1)).max().item(), n=wt.numel())
    return rows


def summary(rows):
    "Code agreement overall (weighted by weights), the worst linear, and per projection kind."
    tot = sum(r['n'] for r in rows.values())
    worst = min(rows, key=lambda n: rows[n]['codes'])
    kinds, layers = defaultdict(list), defaultdict(lambda: [0.0, 0])
    for n, r in rows.items():
        kinds[n.split('.', 1)[1]].append(r['codes'])
        l = layers[int(n.split('.')[0])]; l[0] += r['codes'] * r['n']; l[1] += r['n']
    return dict(codes=sum(r['codes'] * r['n'] for r in rows.values()) / tot, worst=worst, worst_codes=rows[worst]['codes'],
                scales=sum(r['scales'] for r in rows.values()) / len(rows), zeros=sum(r['zeros'] for r in rows.values()) / len(rows),
                max_abs=max(r['max_abs'] for r in rows.values()), max_steps=max(r['max_steps'] for r in rows.values()),
                identical_linears=sum(r['codes'] == 1 for r in rows.values()), n_linears=len(rows),
                zeros_diff=sum(r['zeros_diff'] for r in rows.values()), groups=sum(r['groups'] for r in rows.values()),
                kinds={k: sum(v) / len(v) for k, v in kinds.items()}, layers={k: v[0] / v[1] for k, v in sorted(layers.items())},
                layer0=layers[0][0] / layers[0][1])


def own_codes(model):
    "Our quantized model's codes and grids in the peer's layout (to compare two runs of ours)."
    return {n: dict(codes=q.qweight().codes, scale=q.qweight().scale.float(), zero=q.qweight().zero) for n, q in linear_modules(model).items()}


def with_weights(dense, weights):
    "A copy of `dense` whose decoder linears hold `weights` (by our names)."
    m = copy.deepcopy(dense)
    lins = quantizable_linears(m)
    for n, w in weights.items(): lins[n].weight.data.copy_(w)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--configs', default='w4g64,w3g64', help=f"GPTQ settings among {', '.join(CONFIGS)}")
    ap.add_argument('--f64', default='w3g64', help="configs also run by the peer with its GPTQ in float64 ('' for none)")
    ap.add_argument('--shipped', default='w3g64', help="configs our GPTQ also runs as shipped (float16 scales, dynamic groups)")
    ap.add_argument('--noise', default='w3g64', help="configs whose GPTQ also runs with float32-rounded Hessians, compared with ours (a noise floor)")
    ap.add_argument('--quanto', default='int4,int2', help="quanto RTN weight types ('' to skip)")
    ap.add_argument('--calib-blocks', type=int, default=16); ap.add_argument('--calib-len', type=int, default=256)
    ap.add_argument('--eval-tokens', type=int, default=4096); ap.add_argument('--context', type=int, default=512)
    ap.add_argument('--blocksize', type=int, default=128); ap.add_argument('--damp', type=float, default=0.01)
    ap.add_argument('--reuse', help="a previous run's peer output folder (its printed path): skip the peer run")
    a = ap.parse_args()
    configs = [c for c in a.configs.split(',') if c]
    f64 = [c for c in a.f64.split(',') if c and c in configs]
    shipped = [c for c in a.shipped.split(',') if c and c in configs]
    noise = [c for c in a.noise.split(',') if c and c in configs]

    dense, tok = load_model('smollm2-135m-instruct', dtype='float32')
    corpus = load_corpus('fortunes', 'en')
    calib = token_blocks(tok, list(corpus.calibration), a.calib_len, a.calib_blocks)
    eval_ids = token_stream(tok, list(corpus.test), a.eval_tokens)
    ppl = lambda m: perplexity(m, tok, eval_ids, context=a.context).ppl
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
          f"calibration {tuple(calib.shape)} fortunes-en tokens; test {len(eval_ids)} tokens, context {a.context}")
    n_weights = sum(l.weight.numel() for l in quantizable_linears(dense).values())

    d = Path(a.reuse or tempfile.mkdtemp(prefix='llmc_quant_'))
    print(f"peer outputs: {d}")
    runs = [dict(tag=c, bits=CONFIGS[c][0], group=CONFIGS[c][1], blocksize=a.blocksize, damp=a.damp, precision='float32') for c in configs]
    runs += [dict(r, tag=r['tag'] + '_f64', precision='float64') for r in runs if r['tag'] in f64]
    if a.reuse: peer = json.loads((d / 'out.json').read_text())
    else:
        spec = dict(model_dir=str(fetch_model()), calib=calib.tolist(), runs=runs, out_dir=str(d), out=str(d / 'out.json'))
        t0 = time.perf_counter(); peer = run_peer('llmcompressor', Path(__file__).parent / 'peers' / 'llmcompressor_quant.py', spec, timeout=7200)
        print(f"peer env run: {time.perf_counter() - t0:.0f} s for {len(runs)} runs (model loads, env start and checkpoint writes included)")

    fp_ppl = ppl(dense)
    print(f"dense fp32: ppl {fp_ppl:.3f}, {n_weights} decoder-linear weights\n")
    print(PARITY + "\n")
    results = dict(fp_ppl=fp_ppl, gptq={}, quanto={})

    # ------------------------------------------------------------------ GPTQ vs llmcompressor
    head = (f"{'GPTQ setting':<12} {'ours':<27} {'peer':<9} {'codes =':>8} {'layer0 =':>8} {'worst linear':>27} {'scale =':>8} {'max|dW|':>9} "
            f"{'steps':>6} {'ppl ours':>9} {'ppl peer':>9} {'bits/w o/p':>12} {'MiB o/p':>12} {'wall o/p s':>13} {'ours/peer':>9} {'cpu o/p s':>13}")
    print(head); print('-' * len(head))
    for c in configs:
        bits, group = CONFIGS[c]
        variants = [('float32 grid, static groups', QuantSpec(bits, group, zero='int', float_dtype='float32'), True)]
        if c in shipped: variants.append(('as shipped (fp16, dynamic)', QuantSpec(bits, group), False))
        peer_runs = [c] + ([c + '_f64'] if c in f64 else [])
        theirs = {t: torch.load(d / f'{t}_codes.pt') for t in peer_runs}
        peer_ppl = {t: ppl(with_weights(dense, {n: peer_dequant(v) for n, v in theirs[t].items()})) for t in peer_runs}
        for label, spec, static in variants:
            m = copy.deepcopy(dense)
            fn = (lambda: gptq_static(m, calib, spec, a.blocksize, a.damp)) if static else (lambda: quantize_gptq(m, calib, spec, a.blocksize, a.damp))
            _, wall, cpu = clock(fn)
            with dequantized_weights(m): p = ppl(m)
            qb = quant_bits(m)
            for t in peer_runs:
                s = summary(compare_llmc(m, theirs[t]))
                pr = peer[t]
                row = dict(ours=label, peer=pr['precision'], **{k: v for k, v in s.items()}, ppl_ours=p, ppl_peer=peer_ppl[t],
                           bpw_ours=qb['bits_per_weight'], bpw_peer=pr['stored_bits'] / n_weights, mib_ours=qb['quantized_bits'] / 8 / 2 ** 20,
                           mib_peer=pr['stored_bits'] / 8 / 2 ** 20, wall_ours=wall, wall_peer=pr['wall_s'], cpu_ours=cpu, cpu_peer=pr['cpu_s'])
                results['gptq'][f'{c} | {label} | peer {pr["precision"]}'] = row
                worst = f"{s['worst']} {s['worst_codes']:.4f}"
                bpw = f"{qb['bits_per_weight']:.3f}/{row['bpw_peer']:.3f}"
                mib = f"{row['mib_ours']:.1f}/{row['mib_peer']:.1f}"
                walls, cpus = f"{wall:.1f}/{pr['wall_s']:.1f}", f"{cpu:.1f}/{pr['cpu_s']:.1f}"
                print(f"{c:<12} {label:<27} {pr['precision']:<9} {s['codes']:>8.5f} {s['layer0']:>8.5f} {worst:>27} {s['scales']:>8.4f} {s['max_abs']:>9.2e} "
                      f"{s['max_steps']:>6.2f} {p:>9.3f} {peer_ppl[t]:>9.3f} {bpw:>12} {mib:>12} {walls:>13} {wall / pr['wall_s']:>9.2f} {cpus:>13}")
            if static and c in noise:                                    # ours against ours with float32-rounded Hessians
                m2 = copy.deepcopy(dense)
                _, wall2, cpu2 = clock(lambda: gptq_static(m2, calib, spec, a.blocksize, a.damp, hessian_f32=True))
                with dequantized_weights(m2): p2 = ppl(m2)
                s = summary(compare_llmc(m, own_codes(m2)))
                results['gptq'][f'{c} | {label} | ours with H rounded to float32'] = dict(**s, ppl_ours=p, ppl_other=p2, wall_other=wall2)
                worst = f"{s['worst']} {s['worst_codes']:.4f}"
                print(f"{c:<12} {label:<27} {'ours,H f32':<9} {s['codes']:>8.5f} {s['layer0']:>8.5f} {worst:>27} {s['scales']:>8.4f} "
                      f"{s['max_abs']:>9.2e} {s['max_steps']:>6.2f} {p:>9.3f} {p2:>9.3f}   (the other side: our GPTQ, its Hessians rounded to float32)")
                del m2
            del m
    print("\ncodes =: share of identical integer codes over all decoder linears; layer0 =: the same in layer 0, where both sides see "
          "the same inputs (later layers see the outputs of their own quantized layers); the worst linear beside it; scale =: share of "
          "identical scales (mean over linears); max|dW|: max |our dequantized weight - the peer's|, 'steps' the same in grid steps.\n"
          f"peer format: {', '.join(sorted({v['format'] for v in peer.values()}))} ({', '.join(next(iter(peer.values()))['tensors'])}); "
          f"peer checkpoint reconstruction error (q - zp) * s vs its weight: max {max(v['recon_err'] for v in peer.values()):.1e}")
    for k, row in results['gptq'].items():
        print(f"  {k}: zero points differing in {row['zeros_diff']} of {row['groups']} groups; identical linears {row['identical_linears']}/{row['n_linears']}")
        print(f"  {k}: per projection " + ', '.join(f"{n.split('.')[1]} {v:.4f}" for n, v in row['kinds'].items())
              + "; per layer " + ' '.join(f"{v:.3f}" for v in row['layers'].values()))

    # ------------------------------------------------------------------ RTN vs optimum-quanto
    qtypes = [q for q in a.quanto.split(',') if q]
    if qtypes:
        from optimum.quanto import quantize as q_quantize, freeze, qtypes as Q
        from optimum.quanto.nn import QModuleMixin
        print("\nRTN vs optimum-quanto (in-process): quanto's MaxOptimizer grid = our QuantSpec(b, g, zero='float', float_dtype='float32') "
              "(float minimum and scale, both in the weight's float32). quanto's own group sizes: 128, else the largest multiple of 32 "
              "that divides the inputs (96 for 576 inputs, 128 for 1536); 'g64' sets weight_group_size=64 on every QLinear before freeze.")
        head = (f"{'quanto':<7} {'groups':<16} {'codes =':>8} {'max|dW|':>9} {'ppl ours':>9} {'ppl quanto':>10} {'bits/w o/q':>12} "
                f"{'MiB o/q':>12} {'wall o/q s':>12} {'ours/quanto':>11} {'cpu o/q s':>12}")
        print(head); print('-' * len(head))
        for qt in qtypes:
            bits = Q['q' + qt].bits
            for grouping in ('quanto', 64):
                theirs = copy.deepcopy(dense)
                def run_quanto():
                    q_quantize(theirs, weights=Q['q' + qt], exclude='lm_head')
                    if grouping == 64:
                        for mod in theirs.modules():
                            if isinstance(mod, QModuleMixin): mod.weight_group_size = 64
                    freeze(theirs)
                _, wall_q, cpu_q = clock(run_quanto)
                qlins = {n.split('.', 2)[2]: mod for n, mod in theirs.named_modules() if isinstance(mod, QModuleMixin) and n.startswith('model.layers.')}
                groups = {n: mod.weight_group_size for n, mod in qlins.items()}
                plan = QuantPlan(QuantSpec(bits, None, zero='float', float_dtype='float32'), {n: dict(group=g) for n, g in groups.items() if g})
                m = copy.deepcopy(dense)
                _, wall, cpu = clock(lambda: quantize_rtn(m, None, plan))
                lins = linear_modules(m)
                same = maxd = 0.0; qbits = 0
                for n, mod in qlins.items():
                    w = mod.weight
                    codes = w._data.unpack().reshape(w.shape).long()
                    same += (codes == lins[n].qweight().codes).sum().item()
                    maxd = max(maxd, (w.dequantize().float() - lins[n].dequantized(torch.float32)).abs().max().item())
                    qbits += sum(8 * t.numel() * t.element_size() for k, t in mod.state_dict().items() if k.startswith('weight.'))
                with torch.no_grad(): p_q = ppl(theirs)
                with dequantized_weights(m): p = ppl(m)
                qb = quant_bits(m)
                gs = sorted({g for g in groups.values()}, key=str)
                label = 'g' + '/'.join(map(str, gs)) if grouping == 'quanto' else 'g64 (set)'
                row = dict(codes=same / n_weights, max_abs=maxd, ppl_ours=p, ppl_quanto=p_q, bpw_ours=qb['bits_per_weight'], bpw_quanto=qbits / n_weights,
                           wall_ours=wall, wall_quanto=wall_q, cpu_ours=cpu, cpu_quanto=cpu_q)
                results['quanto'][f'{qt} {label}'] = row
                bpw = f"{row['bpw_ours']:.3f}/{row['bpw_quanto']:.3f}"
                mib = f"{qb['quantized_bits'] / 8 / 2 ** 20:.1f}/{qbits / 8 / 2 ** 20:.1f}"
                walls, cpus = f"{wall:.2f}/{wall_q:.2f}", f"{cpu:.2f}/{cpu_q:.2f}"
                print(f"{qt:<7} {label:<16} {row['codes']:>8.5f} {maxd:>9.2e} {p:>9.3f} {p_q:>10.3f} {bpw:>12} {mib:>12} {walls:>12} "
                      f"{wall / wall_q:>11.2f} {cpus:>12}")
                del theirs, m
    (d / 'results.json').write_text(json.dumps(results, indent=1, default=str))
    print(f"\nall numbers: {d / 'results.json'}")


if __name__ == '__main__':
    main()
