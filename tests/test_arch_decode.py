"""The decoding family on every tiny architecture (llm_lab.tiny.TINY_ARCHS): speculative decoding with an early-exit
draft (greedy identical to transformers' greedy decoding, the sampling rule lossless on the architecture's own
distributions), SpecDec++'s drafter, entropy adaptive decoding (its ends and its rule), FFN skipping (never-skip
bit-identical, skip-all equal to zeroed MLPs, saturation measured where the FFN writes, whole layers with a complete KV
cache), and clear errors where a method cannot apply."""
import math
import pytest, torch
import torch.nn.functional as F
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
from llm_lab.tiny import tiny_model, TINY_ARCHS
from llm_lab.arch import ArchitectureError, decoder_layers, mlp_module, attention_module, hidden_of
from llm_lab.decode import (DRAFTERS, DECODERS, ModelDrafter, HeuristicK, early_exit, dist, speculative_generate,
                            autoregressive_generate)
from llm_lab.decode.speculative import NGramDrafter, lossless_test
from llm_lab.decode.specdec_pp import AcceptanceHead, SpecDecPPDrafter
from llm_lab.decode.entropy_adaptive import entropy_adaptive_generate, EntropyRule
from llm_lab.decode.ffn_skip import ffn_skipping, ffn_sites, ffn_skip_generate, SkipPolicy, SaturationSkip, FixedSkip
from llm_lab.kv import KVCache

PROMPT = torch.randint(3, 259, (12,), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope='module', params=list(TINY_ARCHS))
def arch(request):
    """(name, model) of one tiny architecture with an untied head and a larger init, so that next-token distributions
    are peaked and differ from layer to layer (a tied random head repeats the last token and every draft would agree);
    EOS is an ordinary token (transformers neither stops at it nor suppresses it)."""
    m, _ = tiny_model(request.param, tie_word_embeddings=False, initializer_range=0.2)
    m.generation_config.eos_token_id = None
    return request.param, m


def hf_greedy(m, ids, n):
    return m.generate(ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=n,
                      do_sample=False, top_k=None, top_p=None, temperature=None)[0, len(ids):]


def decode_logits(m, ids):
    "Logits of every position, one token per forward through a KV cache (every token a decode step)."
    c, out = DynamicCache(), []
    with torch.no_grad():
        for j in range(len(ids)): out.append(m(ids[None, j:j + 1], past_key_values=c, use_cache=True).logits[0, -1])
    return torch.stack(out), c


def zeroing(m, layers, sites=('mlp',)):
    "Forward hooks that make the MLP (and attention) outputs of `layers` zero: the reference for skipping."
    def zero(mod, args, out): return (torch.zeros_like(hidden_of(out)), *out[1:]) if isinstance(out, tuple) else torch.zeros_like(out)
    return [(mlp_module(m, l) if s == 'mlp' else attention_module(m, l)).register_forward_hook(zero) for l in layers for s in sites]


def run_zeroed(m, fn, layers, sites=('mlp',)):
    hs = zeroing(m, layers, sites)
    try: return fn()
    finally:
        for h in hs: h.remove()


# speculative decoding

def test_speculative_early_exit_is_greedy(arch):
    "Greedy speculative decoding with the 1-layer early exit (fixed and adaptive K) and with prompt lookup equals greedy decoding."
    name, m = arch
    ref = hf_greedy(m, PROMPT, 24)
    assert torch.equal(autoregressive_generate(m, None, PROMPT, 24)[0], ref)
    for k in (2, HeuristicK(2)):
        out, st = speculative_generate(m, ModelDrafter(early_exit(m, 1)), PROMPT, 24, k=k)
        assert torch.equal(out, ref), (name, k)
        assert sum(st.proposed) > sum(st.accepted) > 0, (name, st.summary())    # the rollback was exercised
    assert torch.equal(speculative_generate(m, NGramDrafter(2), PROMPT, 24, k=3)[0], ref)


def test_speculative_with_a_lab_cache(arch):
    "The target reading its past through the lab's KVCache, rolled back by crop on each rejection: the same greedy tokens."
    name, m = arch
    cache = KVCache()
    out, st = speculative_generate(m, ModelDrafter(early_exit(m, 1)), PROMPT, 16, k=3, cache=cache)
    assert torch.equal(out, hf_greedy(m, PROMPT, 16)) and sum(st.proposed) > sum(st.accepted)
    assert cache.get_seq_length() == len(PROMPT) + 16 - 1


def test_sampling_rule_is_lossless_on_the_architecture(arch):
    """The first token through `verify` is distributed as the target's next-token distribution p, tested against the
    1-layer exit's q at a temperature where the test has power against q (it would detect sampling from the draft)."""
    name, m = arch
    with torch.no_grad():
        lp, lq = m(PROMPT[None]).logits[0, -1], early_exit(m, 1)(PROMPT[None]).logits[0, -1]
    for T in (1.0, 0.5, 0.25):
        p, q = dist(lp, T), dist(lq, T)
        r = lossless_test(p, q, n=3000, seed=0)
        if r['power'] > 0.99: break
    assert r['power'] > 0.99, (name, r)
    assert r['p_value'] > 0.001, (name, T, r)
    out, st = speculative_generate(m, ModelDrafter(early_exit(m, len(decoder_layers(m)))), PROMPT, 12, k=3, temperature=1.0)
    assert st.acceptance_rate == 1.0 and abs(st.alpha - 1) < 1e-6        # a draft identical to the target accepts everything


def test_specdec_pp_drafter(arch):
    "SpecDec++'s drafter is lossless and stops where its threshold says: never before K at threshold 1, after one token at 0."
    name, m = arch
    dm, head = early_exit(m, 1), AcceptanceHead(m.config.hidden_size)
    ref = hf_greedy(m, PROMPT, 12)
    for thr, expect in [(1.0, 3), (0.0, 1)]:
        out, st = speculative_generate(m, SpecDecPPDrafter(dm, head, threshold=thr), PROMPT, 12, k=3)
        assert torch.equal(out, ref) and st.proposed[0] == expect, (name, thr, st.proposed)


# entropy adaptive decoding

def test_ead_ends_and_rule(arch):
    "Threshold 0 is the large model's greedy decoding, infinity the small one's; in between the writers follow EntropyRule."
    name, m = arch
    small = early_exit(m, 1)
    assert torch.equal(entropy_adaptive_generate(m, small, PROMPT, 16, threshold=0.0)[0], hf_greedy(m, PROMPT, 16))
    out, st = entropy_adaptive_generate(m, small, PROMPT, 16, threshold=math.inf)
    assert torch.equal(out, hf_greedy(small, PROMPT, 16))
    H = torch.tensor(st.entropies).median().item()
    _, st = entropy_adaptive_generate(m, small, PROMPT, 24, threshold=H, window=2, min_dwell=2)
    assert st.large == EntropyRule(H, 2, 2).replay(st.prompt_entropies[0], st.entropies)
    assert 0 < st.large_share < 1 and st.switches >= 1, (name, st.summary())


# FFN skipping

def test_ffn_never_skip_is_bit_identical(arch):
    name, m = arch
    ids = PROMPT[:10]
    full, _ = decode_logits(m, ids)
    for policy in (SkipPolicy(), SaturationSkip(2, threshold=2.0, cold_start=0, cold_end=0, warmup=0)):
        with ffn_skipping(m, policy) as log: same, _ = decode_logits(m, ids)
        assert torch.equal(same, full) and log.ratio == 0 and len(log.cosines[0]) == 2, name
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())     # everything removed


def test_ffn_skip_all_equals_zero_mlps(arch):
    name, m = arch
    ids = PROMPT[:10]
    with ffn_skipping(m, FixedSkip([0, 1])) as log: skipped, _ = decode_logits(m, ids)
    assert torch.equal(skipped, run_zeroed(m, lambda: decode_logits(m, ids)[0], [0, 1])) and log.ratio == 1.0
    assert not torch.allclose(skipped, decode_logits(m, ids)[0]), name                       # the MLPs mattered


def test_ffn_saturation_is_measured_where_the_ffn_writes(arch):
    """The cosine of layer 1 is cos(the layer's output without its FFN, its output): after attention in sequential blocks,
    input + attention in GPT-NeoX's parallel ones."""
    name, m = arch
    assert [s.parallel for s in ffn_sites(m)] == [name == 'gpt_neox'] * 2
    grab = {}
    def layer_out(fn):
        h = decoder_layers(m)[1].register_forward_hook(lambda mod, a, out: grab.__setitem__('y', hidden_of(out)))
        try:
            with torch.no_grad(): fn()
        finally: h.remove()
        return grab['y']
    x = PROMPT[None, :1]
    y, y0 = layer_out(lambda: m(x)), run_zeroed(m, lambda: layer_out(lambda: m(x)), [1])
    with ffn_skipping(m, SkipPolicy()) as log:
        with torch.no_grad(): m(x)
    expect = F.cosine_similarity(y0.double().flatten(), y.double().flatten(), dim=0).item()
    assert abs(log.cosines[0][1] - expect) < 1e-9, (name, log.cosines[0][1], expect)


def test_whole_layer_skip_keeps_the_cache_complete(arch):
    "Skipping layer 1 whole equals zeroing its attention and MLP, and it still writes the K/V the real attention writes."
    name, m = arch
    ids = PROMPT[:10]
    full, c_full = decode_logits(m, ids)
    with ffn_skipping(m, FixedSkip([1]), whole_layer=True): whole, c = decode_logits(m, ids)
    ref, _ = run_zeroed(m, lambda: decode_logits(m, ids), [1], ('mlp', 'attn'))
    torch.testing.assert_close(whole, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(c.layers[1].keys, c_full.layers[1].keys, rtol=0, atol=1e-5)
    torch.testing.assert_close(c.layers[1].values, c_full.layers[1].values, rtol=0, atol=1e-5)
    assert c.get_seq_length(1) == len(ids) and not torch.allclose(whole, full)


def test_ffn_skip_generate_is_a_family_decoder(arch):
    name, m = arch
    out, log = DECODERS['ffn_skip'](m, FixedSkip([1], warmup=2), PROMPT, 8)
    with ffn_skipping(m, FixedSkip([1], warmup=2)): ref = hf_greedy(m, PROMPT, 8)
    assert torch.equal(out, ref) and log.new_tokens == 8 and log.counts() == [0, 0] + [1] * 5


# where a method cannot apply

def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=259, n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()


def test_whole_layer_skip_needs_rope():
    "GPT-2 has learned positions: whole-layer skipping (which writes keys itself) refuses it; FFN skipping works there."
    m = gpt2()
    with pytest.raises(ArchitectureError, match=r'GPT2LMHeadModel \(gpt2\) has no rotary'):
        with ffn_skipping(m, FixedSkip([0]), whole_layer=True): pass
    with ffn_skipping(m, FixedSkip([0])) as log: decode_logits(m, PROMPT[:4])
    assert log.ratio == 0.5


def test_drafts_must_share_the_vocabulary():
    m, _ = tiny_model('gemma3')
    other, _ = tiny_model('phi3'); other.resize_token_embeddings(300)
    with pytest.raises(ValueError, match='vocabulary'): speculative_generate(m, ModelDrafter(other), PROMPT, 4)
    with pytest.raises(ValueError, match='vocabulary'): entropy_adaptive_generate(m, other, PROMPT, 4)
    with pytest.raises(ValueError, match=r'n_layers must be an integer in \[1, 2\] for Gemma3ForCausalLM'): early_exit(m, 2.5)


def test_registries_list_the_family():
    assert sorted(DRAFTERS) == ['model', 'ngram', 'specdec_pp']
    assert sorted(DECODERS) == ['autoregressive', 'entropy_adaptive', 'ffn_skip', 'speculative']
    with pytest.raises(KeyError, match="no decoder named 'medusa'; registered: autoregressive"): DECODERS['medusa']
