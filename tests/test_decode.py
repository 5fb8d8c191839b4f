"Speculative decoding end to end: the sampled distribution (with the test's power), lab caches under rollback, schedules, errors."
import itertools
import pytest, torch
from transformers import LlamaConfig, LlamaForCausalLM
import llm_lab.decode as base
from llm_lab.decode import speculative_generate, ModelDrafter, early_exit, dist, HeuristicK, FixedK
from llm_lab.decode.speculative import NGramDrafter, chi2_test
from llm_lab.kv import KVCache, KIVICache
from llm_lab.models import tiny_llama, byte_tokenizer

V = 6

def rand_llama(layers: int, seed: int, vocab: int = V, init: float = 0.6):
    "A random Llama with untied head and peaked distributions (tied random heads just repeat the last token)."
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2,
                      num_key_value_heads=1, initializer_range=init, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()

@pytest.fixture(scope='module')
def small_vocab():
    "A 2-layer random Llama over 6 tokens; its 1-layer early exit as the draft."
    target = rand_llama(2, 0)
    return target, early_exit(target, 1)

def joint(model, prompt):
    "Exact P(x1, x2 | prompt) at temperature 1, (V*V,)."
    with torch.no_grad():
        p1 = dist(model(prompt[None]).logits[0, -1], 1.0)
        seqs = torch.cat([prompt.repeat(V, 1), torch.arange(V)[:, None]], 1)
        p2 = dist(model(seqs).logits[:, -1], 1.0)
    return (p1[:, None] * p2).flatten()

def draw(target, draft, prompt, n):
    counts = torch.zeros(V * V, dtype=torch.float64)
    for s in range(n):
        out, _ = speculative_generate(target, ModelDrafter(draft), prompt, 2, k=2, temperature=1.0, seed=s)
        counts[out[0] * V + out[1]] += 1
    return counts

def test_two_token_sampling_is_the_targets_distribution(small_vocab, monkeypatch):
    target, draft = small_vocab
    prompt = torch.tensor([1, 4, 2])
    p, q = joint(target, prompt), joint(draft, prompt)
    assert torch.minimum(p, q).sum() < 0.8, "draft too close to the target for a meaningful test"
    r = chi2_test(draw(target, draft, prompt, 1500), p, alternative=q)
    assert r['power'] > 0.99, r          # the test could detect sampling from the draft instead
    assert r['p_value'] > 0.001, r
    # and it does detect a broken rule: accept every draft token
    def accept_all(p, q, draft, generator=None):
        return len(draft), base.sample(p[len(draft)], generator)
    monkeypatch.setattr(base, 'verify', accept_all)         # the family's loop (llm_lab.decode) calls the rule by this name
    bad = chi2_test(draw(target, draft, prompt, 1500), p)
    assert bad['p_value'] < 1e-6, bad

def greedy(lm, prompt, n):
    return lm.generate(prompt[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, top_k=None, top_p=None, temperature=None)[0, len(prompt):]

def test_lab_caches_under_rollback():
    lm = rand_llama(3, 2, vocab=259, init=0.1)
    prompt = torch.randint(3, 259, (40,), generator=torch.Generator().manual_seed(1))
    ref = greedy(lm, prompt, 30)
    # the lab's full-precision KVCache: its crop must be exact, so greedy output is identical
    small = rand_llama(1, 5, vocab=259, init=0.1)            # a smaller model with the same vocabulary, often wrong
    cache = KVCache()
    out, st = speculative_generate(lm, ModelDrafter(small), prompt, 30, k=3, cache=cache)
    assert torch.equal(out, ref)
    assert sum(p - a for p, a in zip(st.proposed, st.accepted)) > 0, "no rejection: the rollback was not exercised"
    assert cache.get_seq_length() == len(prompt) + len(out) - 1
    # KIVI-2 with a small window: quantized groups are re-opened by crops; the cache stays consistent
    kv = KIVICache(2, 8, 8)
    out2, _ = speculative_generate(lm, ModelDrafter(small), prompt, 30, k=3, cache=kv)
    assert len(out2) == 30 and kv.get_seq_length() == len(prompt) + 29
    assert kv.bits_per_element() < 16, kv.bits_per_element()   # quantized (the fp32 model would hold 32)

def test_heuristic_schedule_matches_transformers_rule():
    s = HeuristicK(4)
    s.update(4, 4); assert s.k == 6
    s.update(6, 2); assert s.k == 5
    for _ in range(10): s.update(s.k, 0)
    assert s.k == 1
    with pytest.raises(ValueError, match='k must be'): FixedK(0)

def test_tokenizer_mismatch_is_an_error():
    lm, tok = tiny_llama(seed=0)
    other = byte_tokenizer(); other.add_tokens(['<extra>'])
    with pytest.raises(ValueError, match='tokenizer'):
        speculative_generate(lm, ModelDrafter(early_exit(lm, 1), tokenizer=other), torch.tensor([5, 6, 7]), 4, tokenizer=tok)
    with pytest.raises(ValueError, match='temperature'):
        speculative_generate(lm, NGramDrafter(), torch.tensor([5, 6, 7]), 4, temperature=-1)
    with pytest.raises(ValueError, match='empty'):
        speculative_generate(lm, NGramDrafter(), torch.tensor([], dtype=torch.long), 4)


def test_think_and_kvquant_caches_under_speculative_decoding():
    """KVQuant under rollback: greedy speculative output equals greedy decoding through the same cache. ThinK runs and rolls
    back consistently; its output is not compared with `generate`'s, because speculative decoding's first forward carries
    the prompt and the first draft, so ThinK compresses a different prompt (its window queries include the draft)."""
    from llm_lab.kv import ThinKCache, KVQuantCache
    from llm_lab.kv.kvquant import capture_kv, calibrate_kvquant
    from llm_lab.evaluate import greedy_tokens
    lm = rand_llama(3, 2, vocab=259, init=0.1)
    small = rand_llama(1, 5, vocab=259, init=0.1)
    prompt = torch.randint(3, 259, (60,), generator=torch.Generator().manual_seed(1))
    cal = calibrate_kvquant(capture_kv(lm, prompt[None]), 4, max_points=4096)
    ref = greedy_tokens(lm, prompt, 24, cache=KVQuantCache(cal))
    cache = KVQuantCache(cal)
    out, st = speculative_generate(lm, ModelDrafter(small), prompt, 24, k=3, cache=cache)
    assert sum(p - a for p, a in zip(st.proposed, st.accepted)) > 0, "no rejection: the rollback was not exercised"
    assert torch.equal(out, ref)
    assert cache.get_seq_length() == len(prompt) + len(out) - 1
    think = ThinKCache(lm, 0.5, window=16, recent=8, dtype=None)
    out, st = speculative_generate(lm, ModelDrafter(small), prompt, 24, k=3, cache=think)
    assert len(out) == 24 and sum(p - a for p, a in zip(st.proposed, st.accepted)) > 0
    assert think.get_seq_length() == len(prompt) + 23
    k = think.layers[0].k
    assert len(k.thin) == len(prompt) + 3 - 8 and len(k) == len(prompt) + 23     # the first forward: prompt + 3 drafts, pruned once
