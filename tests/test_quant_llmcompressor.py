"""GPTQ parity with llmcompressor's GPTQModifier (its own env, `llm_lab.peers`, built on first use as the other parity tests do).

Same tiny model, same calibration tokens, same spec (asymmetric min-max grid with an integer zero point, float32 scales, every
group's grid from the original weights as llmcompressor's observer computes it, blocksize 128, damping 0.01, no act-order):
- llmcompressor with its GPTQ arithmetic in float64 (its module constant GPTQ_PRECISION patched, nothing else): every integer
  code identical to ours (ours runs in float64);
- llmcompressor as shipped (float32 Hessian and column loop): at least 99% of the codes identical (float32 rounding moves a few
  weights across a rounding boundary, and GPTQ spreads each such flip over the rest of its row).
And on a tiny Phi-3 (fused qkv and gate-up projections, partial RoPE, its mask built through a local alias that
llmcompressor's tracer cannot see through: benchmarks/peers/llmc_causal_fix.py keeps the peer's attention causal), in float64:
every code identical."""
import copy
from pathlib import Path
import pytest
import torch

from llm_lab.peers import run_peer
from llm_lab.tiny import tiny_model
from llm_lab.quant import QuantSpec, GPTQ_BITS, gptq, quantize_layerwise, linear_modules

SCRIPT = Path(__file__).resolve().parents[1] / 'benchmarks' / 'peers' / 'llmcompressor_quant.py'
SETTINGS = {'w4g32': (4, 32), 'w3g32': (3, 32), 'w4pc': (4, None)}


def run_gptq_peer(tmp_path_factory, arch: str, runs: list[dict]):
    "A tiny `arch` model saved, llmcompressor's GPTQ run on it in its env: (model, calibration tokens, output folder, results)."
    d = tmp_path_factory.mktemp(f'llmc_gptq_{arch}')
    m, tok = tiny_model(arch)
    m.save_pretrained(d / 'model'); tok.save_pretrained(d / 'model')
    calib = torch.randint(3, 259, (8, 64), generator=torch.Generator().manual_seed(0))
    out = run_peer('llmcompressor', SCRIPT, dict(model_dir=str(d / 'model'), calib=calib.tolist(), runs=runs, out_dir=str(d),
                                                 out=str(d / 'out.json')), timeout=900)
    return m, calib, d, out


@pytest.fixture(scope='module')
def peer(tmp_path_factory):
    return run_gptq_peer(tmp_path_factory, 'llama', [dict(tag=f'{k}_{p}', bits=b, group=g, blocksize=128, damp=0.01, precision=p)
                                                     for k, (b, g) in SETTINGS.items() for p in ('float32', 'float64')])


def ours(m, calib, bits, group):
    q = copy.deepcopy(m)
    step = lambda w, st, s, out: gptq(w, st.xtx, s, 128, 0.01, False, out, static_groups=True)
    return quantize_layerwise(q, calib, QuantSpec(bits, group, float_dtype='float32'), step, hessian=True, bits=GPTQ_BITS)


@pytest.mark.parametrize('setting', list(SETTINGS))
def test_gptq_equals_llmcompressor(peer, setting):
    m, calib, d, out = peer
    q = linear_modules(ours(m, calib, *SETTINGS[setting]))
    for precision, least in (('float64', 1.0), ('float32', 0.99)):
        theirs = torch.load(d / f'{setting}_{precision}_codes.pt')
        assert set(theirs) == set(q) and out[f'{setting}_{precision}']['recon_err'] == 0
        same = sum((q[n].qweight().codes == t['codes'].long()).sum().item() for n, t in theirs.items())
        share = same / sum(t['codes'].numel() for t in theirs.values())
        assert share >= least, (setting, precision, share)
        for n, t in theirs.items():        # the same grids, up to one float32 rounding: its scale is (max - min) / (2^b - 1)
            torch.testing.assert_close(q[n].qweight().scale, t['scale'], rtol=2 ** -23, atol=0)   # in float32, ours in float64 then rounded
            assert torch.equal(q[n].qweight().zero.long(), t['zero'].long()), n


@pytest.fixture(scope='module')
def peer_phi3(tmp_path_factory):
    return run_gptq_peer(tmp_path_factory, 'phi3', [dict(tag='w4g32_float64', bits=4, group=32, blocksize=128, damp=0.01, precision='float64')])


def test_gptq_equals_llmcompressor_on_phi3(peer_phi3):
    m, calib, d, out = peer_phi3
    q = linear_modules(ours(m, calib, 4, 32))
    theirs = torch.load(d / 'w4g32_float64_codes.pt')
    assert set(theirs) == set(q) and {n.split('.', 1)[1] for n in q} == {'self_attn.qkv_proj', 'self_attn.o_proj', 'mlp.gate_up_proj', 'mlp.down_proj'}
    for n, t in theirs.items():                      # every linear, the ones after the first attention included
        assert torch.equal(q[n].qweight().codes, t['codes'].long()), (n, (q[n].qweight().codes == t['codes'].long()).float().mean().item())
