"KIVICache as a transformers Cache, on the embedded model and on tiny_llama."
import pytest, torch
from transformers import DynamicCache
from llm_lab.kv import KIVICache, KVCache
from llm_lab.evaluate import tensor_bytes, greedy_tokens


def test_import_from_family():
    from llm_lab.kv import KIVICache as K
    from llm_lab.kv.kivi import KIVICache as K2
    assert K is K2
    with pytest.raises(ImportError): from llm_lab.kv import NoSuchCache  # noqa


@pytest.mark.parametrize('bits', [2, 4])
def test_generate_on_embedded_model(embedded, bits):
    from llm_lab.models import chat_prompt
    model, tok = embedded
    ids = tok(chat_prompt(tok, 'Write a short story about the sea.'), return_tensors='pt')
    cache = KIVICache(bits=bits, group_size=32, residual_length=32)
    out = model.generate(**ids, past_key_values=cache, max_new_tokens=40, min_new_tokens=40, do_sample=False)
    assert out.shape[1] == ids.input_ids.shape[1] + 40
    assert cache.get_seq_length() == out.shape[1] - 1
    assert cache.memory_bits() == 8 * tensor_bytes(cache)
    assert cache.memory_bits() < cache.fp_bits(32) / 2


def test_batched_generation_with_left_padding(tiny):
    model, tok = tiny
    tok.padding_side = 'left'
    enc = tok(['a short one', 'a much longer prompt than the first one'], return_tensors='pt', padding=True)
    out = model.generate(**enc, past_key_values=KIVICache(4, group_size=8, residual_length=16), max_new_tokens=24, do_sample=False)
    assert out.shape == (2, enc.input_ids.shape[1] + 24)


def test_crop_then_continue_matches_fresh_decode(tiny):
    "Speculative decoding's rollback: crop k tokens inside the residual window, continue: same as never having them."
    model, _ = tiny
    ids = torch.randint(3, 259, (1, 90), generator=torch.Generator().manual_seed(0))
    a, b = KIVICache(2, 16, 32), KIVICache(2, 16, 32)
    with torch.no_grad():
        model(ids[:, :70], past_key_values=a, use_cache=True); model(ids[:, :70], past_key_values=b, use_cache=True)
        model(ids[:, 70:75], past_key_values=a, use_cache=True)      # 5 speculative tokens ...
        a.crop(-5)                                                    # ... rejected
        la = model(ids[:, 70:73], past_key_values=a, use_cache=True).logits
        lb = model(ids[:, 70:73], past_key_values=b, use_cache=True).logits
    assert a.get_seq_length() == b.get_seq_length() == 73
    torch.testing.assert_close(la, lb)


def test_the_peer_quantized_cache_runs(tiny):
    from llm_lab.kv.kivi import quanto_cache
    model, _ = tiny
    ids = torch.randint(3, 259, (1, 40))
    assert len(greedy_tokens(model, ids, 8, cache=quanto_cache(model, 2, 16, 16))) == 8


@pytest.fixture(scope='module')
def kvquant_cal(embedded):
    from llm_lab.kv.kvquant import capture_kv, calibrate_kvquant
    from llm_lab.data import load_corpus, token_blocks
    model, tok = embedded
    calib = token_blocks(tok, list(load_corpus('fortunes').calibration), 128, 1)
    return capture_kv(model, calib), calib


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_kvquant_generate_on_embedded_model(embedded, kvquant_cal, bits):
    "KVQuantCache inside generate, batch of two left-padded prompts: each row decodes as it does alone."
    from llm_lab.kv import KVQuantCache
    from llm_lab.kv.kvquant import calibrate_kvquant
    from llm_lab.models import chat_prompt
    model, tok = embedded
    cal = calibrate_kvquant(kvquant_cal[0], bits, qnorm=bits == 2, max_points=4096)
    tok.padding_side = 'left'
    prompts = [chat_prompt(tok, 'Name a colour.'), chat_prompt(tok, 'Write one sentence about the sea and the wind.')]
    enc = tok(prompts, return_tensors='pt', padding=True)
    cache = KVQuantCache(cal)
    out = model.generate(**enc, past_key_values=cache, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert out.shape == (2, enc.input_ids.shape[1] + 12)
    # ~25 tokens: the fp32 first token (~1.3 bits/element) and per-layer constants (~0.65) weigh a lot; the exact layout
    # is checked to the bit in nbs/21; here: more than the codes, less than an fp16 cache
    assert bits < cache.bits_per_element() < 16
    alone = tok(prompts[1:], return_tensors='pt')                          # the longer prompt has no padding
    out1 = model.generate(**alone, past_key_values=KVQuantCache(cal), max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(out[1], out1[0])


def test_kvquant_components_lower_the_error(embedded, kvquant_cal):
    "On held-out keys of the embedded model, per-channel and pre-RoPE keys each reduce the 3-bit reconstruction error."
    from llm_lab.kv.kvquant import capture_kv, calibrate_kvquant, KVQuantCache
    from transformers import DynamicCache
    model, tok = embedded
    acts, calib = kvquant_cal
    ids = torch.randint(100, 20000, (1, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): fp = DynamicCache(); model(ids, past_key_values=fp)
    def key_error(**kw):
        q = KVQuantCache(calibrate_kvquant(acts, 3, nuq=False, fisher=False, outliers=0.0, **kw), sink=0)
        num = den = 0.0
        for l, fl in enumerate(fp.layers):
            k, _ = q.update(fl.keys, fl.values, l)
            num += (k.double() - fl.keys.double()).pow(2).sum().item(); den += fl.keys.double().pow(2).sum().item()
        return (num / den) ** 0.5
    e_token, e_chan, e_pre = key_error(per_channel_keys=False, pre_rope=False), key_error(pre_rope=False), key_error()
    assert e_chan < e_token and e_pre < e_chan, (e_token, e_chan, e_pre)
