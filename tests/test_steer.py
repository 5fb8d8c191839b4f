"Steering family: parity with the steering-vectors library (its own env, transformers 4.x) on the embedded model."
import json
from pathlib import Path
import pytest
import torch
from llm_lab.models import fetch_model
from llm_lab.peers import run_peer
from llm_lab.steer import steering, read_activations
from llm_lab.steer.vectors import caa, pca_vector, first_component
from llm_lab.synthetic import sentiment_pairs

HERE = Path(__file__).parent


@pytest.fixture(scope='module')
def sv_run(embedded, tmp_path_factory):
    "The same pairs, layers and prompt through our code and through steering-vectors 0.12.2."
    lm, tok = embedded
    d = sentiment_pairs(6, seed=3)
    pairs = [(p + c, p + r) for p, c, r in zip(d.prompts, d.chosen, d.rejected)]
    spec = dict(model_dir=str(fetch_model()), pairs=pairs, layers=[3, 11, 20], read_index=-1, prompt=d.prompts[0],
                multiplier=4.0, max_new_tokens=6, eos_token=tok.eos_token, out=str(tmp_path_factory.mktemp('sv') / 'out.json'))
    peer = run_peer('steering-vectors', HERE / 'peers' / 'steering_vectors_caa.py', spec)
    return lm, tok, spec, peer


def test_caa_vector_matches_steering_vectors(sv_run):
    lm, tok, spec, peer = sv_run
    ours = caa(lm, tok, spec['pairs'], layers=spec['layers'], read_index=spec['read_index'])
    for l in spec['layers']:
        theirs = torch.tensor(peer['caa'][str(l)], dtype=torch.float64)
        assert torch.allclose(ours[l].double(), theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max()), l


def test_pca_direction_matches_steering_vectors_pca_aggregator(sv_run):
    "Their pca_aggregator returns the unit first component; ours scales it by the mean projection: compare directions."
    lm, tok, spec, peer = sv_run
    ours = pca_vector(lm, tok, spec['pairs'], layers=spec['layers'])
    for l in spec['layers']:
        theirs = torch.tensor(peer['pca'][str(l)], dtype=torch.float64)
        u = ours[l].double() / ours[l].double().norm()
        assert torch.cosine_similarity(u, theirs, 0) > 1 - 1e-5, l


def test_steered_logits_match_steering_vectors_apply(sv_run):
    lm, tok, spec, peer = sv_run
    vec = caa(lm, tok, spec['pairs'], layers=spec['layers'])
    ids = tok(spec['prompt'], return_tensors='pt').input_ids
    with torch.no_grad(), steering(lm, vec, spec['multiplier']): ours = lm(ids).logits[0, -1].double()
    theirs = torch.tensor(peer['steered_logits'], dtype=torch.float64)
    with torch.no_grad(): plain = lm(ids).logits[0, -1].double()
    assert (theirs - plain).abs().max() > 1.0  # the steering does something ...
    assert torch.allclose(ours, theirs, atol=2e-3, rtol=1e-4), (ours - theirs).abs().max()  # ... and the same thing


def test_steering_from_a_position_under_generate_with_cache(sv_run):
    "Ours steers decoded tokens by absolute position, so cache and no cache agree; the peer's per-call mask is reported."
    lm, tok, spec, peer = sv_run
    vec = caa(lm, tok, spec['pairs'], layers=spec['layers'])
    ids = tok(spec['prompt'], return_tensors='pt').input_ids
    kw = dict(max_new_tokens=spec['max_new_tokens'], do_sample=False)
    with steering(lm, vec, spec['multiplier'], min_position=ids.shape[1]):
        a = lm.generate(ids, use_cache=True, **kw)[0].tolist(); b = lm.generate(ids, use_cache=False, **kw)[0].tolist()
    assert a == b
    assert b == peer['gen_nocache']  # without a cache both libraries steer the same positions
    print('steering-vectors with a KV cache equals its no-cache output:', peer['gen_cache'] == peer['gen_nocache'])
