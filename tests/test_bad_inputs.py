"Bad inputs give clear errors, never a silent wrong answer."
import pytest, torch
from llm_lab.models import load_model
from llm_lab.kv import KIVICache, quantize, KVStream
from llm_lab.data import load_corpus, token_blocks
from llm_lab.evaluate import perplexity
from llm_lab.repro import load_paper, eval_check, run_papers


def test_unknown_model():
    with pytest.raises(ValueError, match='unknown model'): load_model('gpt-5')


@pytest.mark.parametrize('kw', [dict(bits=3), dict(bits=8), dict(key_bits=1), dict(value_bits=3)])
def test_kivi_unsupported_bits(kw):
    with pytest.raises(ValueError, match='2 and 4 bits'): KIVICache(**kw)


def test_kivi_bad_geometry():
    with pytest.raises(ValueError, match='multiple of group'): KIVICache(group_size=32, residual_length=48)
    with pytest.raises(ValueError, match='positive'): KIVICache(group_size=0)
    with pytest.raises(ValueError, match='>= 0'): KIVICache(residual_length=-1)
    with pytest.raises(ValueError, match='group size'): quantize(torch.zeros(1, 1, 10, 4), 2, 4, -2)
    with pytest.raises(ValueError, match='bits'): KVStream(bits=9)


def test_empty_corpus(tmp_path):
    (tmp_path / 'a.txt').write_text('')
    with pytest.raises(ValueError, match='empty'): load_corpus(str(tmp_path / 'a.txt'))


def test_unknown_corpus():
    with pytest.raises(FileNotFoundError, match='unknown corpus'): load_corpus('wikitext-103-nowhere')


def test_perplexity_inputs(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match='at least 2 tokens'): perplexity(model, tok, torch.tensor([5]))
    with pytest.raises(ValueError, match='stride'): perplexity(model, tok, torch.arange(3, 40), context=8, stride=16)
    with pytest.raises(ValueError, match='fewer than'): token_blocks(tok, ['ab'], 8, 1)


def test_repro_inputs():
    with pytest.raises(FileNotFoundError, match='registered papers:.*kivi'): load_paper('no-such-paper')
    with pytest.raises(ValueError, match='unknown scale'): run_papers(['kivi'], scale='huge')
    with pytest.raises(FileNotFoundError): run_papers(['kivi', 'nope'], scale='tiny')
    with pytest.raises(ValueError, match='not allowed'): eval_check('open("x")', {})


def test_preference_inputs(tiny):
    from llm_lab.prefs.logps import tokenize_completions
    from llm_lab.prefs.losses import dpo_loss, simpo_loss, call_loss
    from llm_lab.prefs.trainer import PrefConfig
    model, tok = tiny
    with pytest.raises(ValueError, match='empty'): tokenize_completions(tok, ['a prompt'], [''])
    with pytest.raises(ValueError, match='2 prompts but 1'): tokenize_completions(tok, ['a', 'b'], ['c'])
    s = -torch.rand(4) - 1
    with pytest.raises(ValueError, match='batch size mismatch'): dpo_loss(s, s[:3], s, s)
    with pytest.raises(ValueError, match='beta must be > 0'): dpo_loss(s, s, s, s, beta=0.0)
    with pytest.raises(ValueError, match='beta must be > 0'): simpo_loss(s, s, s.abs(), s.abs(), beta=-1.0)
    with pytest.raises(ValueError, match='NaN'): dpo_loss(s.clone().fill_(float('nan')), s, s, s)
    with pytest.raises(ValueError, match='positive log-probabilities'): dpo_loss(-s, s, s, s)
    with pytest.raises(ValueError, match='needs'): call_loss('ipo', {'chosen_logps': s})
    with pytest.raises(ValueError, match='unknown loss'): PrefConfig('ppo')


def test_pruning_inputs():
    "Sparsity outside [0, 1), N:M with N >= M, targets larger than the model, bad ratios and layers: clear errors."
    from llm_lab.models import tiny_llama
    from llm_lab.prune.unstructured import prune_wanda, prune_magnitude
    from llm_lab.prune.depth import prune_depth
    from llm_lab.prune.minitron import activation_importance, prune_width
    from llm_lab.prune.llm_pruner import group_importance, prune_groups
    model, _ = tiny_llama(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    calib = torch.randint(0, model.config.vocab_size, (2, 16))
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r'\[0, 1\)'): prune_magnitude(model, calib, bad)
    with pytest.raises(ValueError, match='0 < N < M'): prune_wanda(model, calib, '4:2')
    with pytest.raises(ValueError, match='two integers'): prune_wanda(model, calib, '2:x')
    with pytest.raises(ValueError, match='token ids'): prune_wanda(model, calib.float(), 0.5)
    with pytest.raises(ValueError, match=r'n must be an integer in \[0, 2\)'): prune_depth(model, calib, 2, 'last')
    imp = activation_importance(model, calib)
    with pytest.raises(ValueError, match='cannot grow'): prune_width(model, imp, intermediate=256)
    with pytest.raises(ValueError, match='cannot grow'): prune_width(model, imp, hidden=65)
    gi = group_importance(model, estimator='l2')
    with pytest.raises(ValueError, match=r'\[0, 1\)'): prune_groups(model, gi, 1.0)
    with pytest.raises(ValueError, match=r'layers must be in \[0, 2\)'): prune_groups(model, gi, 0.2, layers=[3])
    with pytest.raises(ValueError, match='unknown estimator'): group_importance(model, calib, 'taylor')
    from llm_lab.prune import prune, check_calib, top_indices, recover
    with pytest.raises(KeyError, match="no pruner named 'wand'"): prune(model, calib, 'wand', 0.5)
    with pytest.raises(ValueError, match='token ids'): check_calib(model, calib[:, :1])
    with pytest.raises(ValueError, match=r'k must be an integer in \[0, 4\]'): top_indices(torch.ones(4), 5)
    with pytest.raises(ValueError, match='unknown recovery'): recover(model, calib, calib[0], how='qlora')
    with pytest.raises(ValueError, match='keys among'): prune(model, calib, 'minitron_width', dict(layers=1))
    with pytest.raises(ValueError, match=r'ratio must be in \[0, 1\)'): prune(model, calib, 'llm_pruner', 1.5)


def test_kvquant_inputs(tiny):
    "Unsupported bits, an outlier fraction outside [0, 0.5), pre-RoPE on a model without rotary embedding: clear errors."
    from transformers import OPTConfig, OPTForCausalLM
    from llm_lab.kv.kvquant import capture_kv, calibrate_kvquant, KVQuantCache
    model, _ = tiny
    ids = torch.randint(3, 259, (1, 32))
    acts = capture_kv(model, ids)
    for bits in (1, 5, 8):
        with pytest.raises(ValueError, match='2, 3, 4 bits'): calibrate_kvquant(acts, bits)
    for frac in (-0.1, 0.5, 1.0):
        with pytest.raises(ValueError, match=r'\[0, 0.5\)'): calibrate_kvquant(acts, 3, outliers=frac)
    with pytest.raises(ValueError, match='token ids'): capture_kv(model, ids.float())
    with pytest.raises(TypeError, match='KVQuantCalibration'): KVQuantCache(3)
    opt = OPTForCausalLM(OPTConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
                                   max_position_embeddings=64, word_embed_proj_dim=32)).eval()
    opt_acts = capture_kv(opt, ids)                                     # learned positions: keys are never rotated
    with pytest.raises(ValueError, match='no rotary embedding'): calibrate_kvquant(opt_acts, 3)
    cal = calibrate_kvquant(opt_acts, 3, pre_rope=False)                # post-RoPE (= plain) keys work
    with torch.no_grad(): opt(ids, past_key_values=KVQuantCache(cal))


def test_think_inputs(tiny):
    "A pruning ratio outside [0, 1), an unknown score, value pruning under KIVI's per-token groups, an attention whose queries the lab cannot read."
    from transformers import GPT2Config, GPT2LMHeadModel
    from llm_lab.kv import ThinKCache
    from llm_lab.arch import ArchitectureError
    model, _ = tiny
    for r in (-0.1, 1.0, 1.5, 'half'):
        with pytest.raises(ValueError, match=r'\[0, 1\)'): ThinKCache(model, ratio=r)
        with pytest.raises(ValueError, match=r'\[0, 1\)'): ThinKCache(model, value_ratio=r)
    with pytest.raises(ValueError, match='score'): ThinKCache(model, score='l1')
    with pytest.raises(ValueError, match='not values'): ThinKCache(model, value_ratio=0.4, quant=KIVICache(2))  # 10 of 16 channels: no whole 2-bit packing
    from llm_lab.kv.kvquant import KVQuantCache, capture_kv, calibrate_kvquant   # a cache whose streams are not KVStreams
    cal = calibrate_kvquant(capture_kv(model, torch.randint(3, 250, (1, 32))), 2, fisher=False)
    with pytest.raises(TypeError, match='KIVICache.*got KVQuantCache'): ThinKCache(model, quant=KVQuantCache(cal))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()
    with pytest.raises(ArchitectureError, match='GPT2LMHeadModel.*unknown attention layout'): ThinKCache(gpt2)


def test_steering_inputs(tiny):
    from llm_lab.steer import STEERERS, NeuronEdit, SteeringVector, edit_neurons, neuron_stats
    from llm_lab.steer.subnetwork import FinetuneConfig, finetune
    model, tok = tiny
    with pytest.raises(ValueError, match='unknown site'): SteeringVector({0: torch.zeros(64)}, site='residual')
    with pytest.raises(ValueError, match='width 32'): SteeringVector({0: torch.zeros(32)}).patch(model)
    with pytest.raises(ValueError, match='unknown operator'): SteeringVector({0: torch.zeros(64)}).patch(model, operator='mul')
    with pytest.raises(IndexError, match='neuron index'): edit_neurons(model, [NeuronEdit(0, [999], 'set', 0.0)]).__enter__()
    with pytest.raises(ValueError, match='site must be one of'): neuron_stats(model, tok, {'en': ['abc']}, site='resid')
    with pytest.raises(KeyError, match='registered: actadd'): STEERERS['steer-all']
    with pytest.raises(ValueError, match='unknown method'): finetune(model, ['abc'], 'adapters', tokenizer=tok, val=['abc'])
    with pytest.raises(ValueError, match='steps'): FinetuneConfig(steps=0)


def test_decode_inputs(tiny):
    model, _ = tiny
    from llm_lab.decode import early_exit, FixedK, ModelDrafter, speculative_generate, autoregressive_generate
    from llm_lab.decode.speculative import NGramDrafter
    from llm_lab.decode.specdec_pp import AcceptanceHead, SpecDecPPDrafter, train_head, acceptance_data
    from llm_lab.decode.entropy_adaptive import EntropyRule, entropy_adaptive_generate
    from llm_lab.decode.ffn_skip import SaturationSkip, random_plan
    ids = torch.tensor([5, 6, 7])
    with pytest.raises(ValueError, match=r'n_layers must be an integer in \[1, 2\] for LlamaForCausalLM'): early_exit(model, 3)
    with pytest.raises(ValueError, match='k must be an integer'): FixedK(True)
    with pytest.raises(ValueError, match='min_confidence'): ModelDrafter(model, min_confidence=-0.1)
    with pytest.raises(ValueError, match='min_ngram'): NGramDrafter(max_ngram=1, min_ngram=2)
    with pytest.raises(ValueError, match='max_new_tokens'): speculative_generate(model, NGramDrafter(), ids, 0)
    with pytest.raises(ValueError, match='no helper'): autoregressive_generate(model, NGramDrafter(), ids, 4)
    with pytest.raises(ValueError, match='threshold'): SpecDecPPDrafter(model, AcceptanceHead(64), threshold=-0.5)
    with pytest.raises(ValueError, match='k_min'): SpecDecPPDrafter(model, AcceptanceHead(64), k_min=0)
    with pytest.raises(ValueError, match='as many labels'): train_head(AcceptanceHead(4), torch.zeros(3, 4), torch.zeros(2))
    with pytest.raises(ValueError, match='start 9 outside'): acceptance_data(model, model, [ids], [9])
    with pytest.raises(ValueError, match='threshold must be >= 0'): EntropyRule(float('nan'))
    with pytest.raises(ValueError, match='min_dwell'): entropy_adaptive_generate(model, model, ids, 4, min_dwell=0)
    with pytest.raises(ValueError, match='route needs one 0/1'): entropy_adaptive_generate(model, model, ids, 4, route=[0, 2, 1, 1])
    with pytest.raises(ValueError, match='max_ratio'): SaturationSkip(8, max_ratio=1.5)
    with pytest.raises(ValueError, match='cold_start'): random_plan([1], 4, cold_start=2, cold_end=2)
