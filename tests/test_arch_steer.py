"""The steering family on every tiny architecture (llm_lab.tiny.TINY_ARCHS): CAA steering, LAPE statistics and a neuron edit,
subnetwork fine-tuning confined bit-exactly to the chosen neurons, RepE / ActAdd / reasoning vectors, every registered steerer;
a clear error where a method cannot apply (an MLP of a shape the lab does not know)."""
import re
import pytest, torch
from torch import nn
from llm_lab.tiny import TINY_ARCHS, tiny_model
from llm_lab.arch import ArchitectureError, decoder_layers, site_width, text_config
from llm_lab.hooks import capture
from llm_lab.steer import STEERERS, Intervention, NeuronEdits, NeuronEdit, SteeringVector, edit_neurons, neuron_stats
from llm_lab.steer.vectors import actadd, caa, pca_vector
from llm_lab.steer.lape import deactivate, lape
from llm_lab.steer.reasoning import reasoning_vector
from llm_lab.steer.subnetwork import FinetuneConfig, finetune_subnetwork

ARCHS = list(TINY_ARCHS)
PAIRS = [('I love this, it is great', 'I hate this, it is awful'), ('What a good day', 'What a bad day')]
LANGS = {'en': ['the cat sat on the mat and looked at the dog in the garden'],
         'de': ['der Hund lief durch den Park und sah die Katze im Garten']}
TEXTS = ['the cat sat on the mat and looked at the dog. ' * 4, 'a bird flew over the house in the morning light. ' * 4]
PROMPT = 'The cat sat on the mat and'


def n_hooks(model): return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def logits(model, ids):
    with torch.no_grad(): return model(ids).logits


@pytest.mark.parametrize('arch', ARCHS)
def test_caa_steers_and_multiplier_zero_is_identity(arch):
    m, t = tiny_model(arch)
    ids = t(PROMPT, return_tensors='pt').input_ids
    with torch.no_grad(): base = m(ids, output_hidden_states=True).logits   # transformers adds its own capture hooks once
    before = n_hooks(m)
    vec = caa(m, t, PAIRS, layers=[0, 1])
    assert [tuple(vec[l].shape) for l in (0, 1)] == [(site_width(m, 'resid', l),) for l in (0, 1)]
    with vec.apply(m, 0.0): assert torch.equal(logits(m, ids), base)                 # bit-exact
    with vec.apply(m, 4.0): steered = logits(m, ids)
    assert (steered - base).abs().max() > 1e-3
    h = vec.patch(m, 4.0)
    assert torch.equal(logits(m, ids), steered)
    h.remove()
    with vec.apply(m, 4.0, min_position=ids.shape[1]):                               # steering the answer only, under a KV cache
        a = m.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
        b = m.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(a, b)
    assert n_hooks(m) == before


@pytest.mark.parametrize('arch', ARCHS)
def test_lape_statistics_and_deactivation(arch):
    m, t = tiny_model(arch)
    st = neuron_stats(m, t, LANGS, max_tokens=96, block=32)
    width = site_width(m, 'act', 0)
    assert st.probs.shape == (len(decoder_layers(m)), width, 2)
    assert ((st.probs >= 0) & (st.probs <= 1)).all() and st.probs.sum() > 0
    ln = lape(st, top_rate=0.05)
    sel = ln['de'] or ln['en']
    assert sel, f'{arch}: LAPE found no language neuron on two languages of text'
    layer = next(iter(sel))
    ids = t('hallo Welt, wie geht es', return_tensors='pt').input_ids
    with torch.no_grad(), capture(m, 'act', layer) as c0: base = m(ids).logits
    with torch.no_grad(), edit_neurons(m, deactivate(sel)), capture(m, 'act', layer) as c1: edited = m(ids).logits
    a0, a1 = c0.get('act', layer)[0], c1.get('act', layer)[0]
    idx = sel[layer]
    assert torch.equal(a1[:, idx], torch.zeros(ids.shape[1], len(idx)))            # the act site reads the edited values
    rest = torch.ones(width, dtype=torch.bool); rest[idx] = False
    assert torch.equal(a1[:, rest], a0[:, rest])                                   # and nothing else changed there
    assert (a0[:, idx] != 0).any() and not torch.equal(edited, base)


def owned_mask(arch, model, layer, idx):
    "By architecture, written out here (not from llm_lab.arch): the entries of each weight that neuron `idx` of `layer` owns."
    I, sd = site_width(model, 'act', layer), model.state_dict()
    idx = torch.tensor(idx)
    if arch == 'phi3': rows = {'mlp.gate_up_proj.weight': torch.cat([idx, idx + I])}; cols = {'mlp.down_proj.weight': idx}
    elif arch == 'gpt_neox': rows = {'mlp.dense_h_to_4h.weight': idx, 'mlp.dense_h_to_4h.bias': idx}; cols = {'mlp.dense_4h_to_h.weight': idx}
    else: rows = {'mlp.gate_proj.weight': idx, 'mlp.up_proj.weight': idx}; cols = {'mlp.down_proj.weight': idx}
    out = {}
    for suffix, pos in [*((s, (p, 0)) for s, p in rows.items()), *((s, (p, 1)) for s, p in cols.items())]:
        key = next(k for k in sd if k.endswith(f'layers.{layer}.{suffix}'))
        mask = torch.zeros_like(sd[key], dtype=torch.bool)
        mask.index_fill_(pos[1], pos[0], True)
        out[key] = mask
    return out


@pytest.mark.parametrize('arch', ARCHS)
def test_subnetwork_finetuning_is_confined_bit_exactly(arch):
    m, t = tiny_model(arch)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    neurons = {1: [2, 7, 40]}
    cfg = FinetuneConfig(steps=3, batch_size=2, block_size=16, eval_every=3, lr=1e-2, val_tokens=32)
    res = finetune_subnetwork(m, neurons, TEXTS, tokenizer=t, val=TEXTS[1:], config=cfg)
    allowed = owned_mask(arch, m, 1, neurons[1])
    after = m.state_dict()
    assert set(after) == set(before)
    for k in before:
        changed = after[k] != before[k]
        outside = changed & ~allowed.get(k, torch.zeros_like(changed))
        assert not outside.any(), f'{arch}: {k} changed outside the neurons ({int(outside.sum())} entries)'
    for k, mask in allowed.items():
        assert (after[k] != before[k])[mask].float().mean() > 0.9, f'{arch}: {k} did not train'
    assert res.n_trainable == sum(int(mask.sum()) for mask in allowed.values())
    assert [h['step'] for h in res.history] == [0, 3] and res.tokens == 3 * 2 * 16


@pytest.mark.parametrize('arch', ARCHS)
def test_repe_actadd_and_reasoning_vectors(arch):
    m, t = tiny_model(arch)
    ids = t(PROMPT, return_tensors='pt').input_ids
    base, H = logits(m, ids), text_config(m).hidden_size
    vecs = dict(pca=pca_vector(m, t, PAIRS, [1]), actadd=actadd(m, t, 'Love', 'Hate', [0]),
                reasoning=reasoning_vector(m, t, ['Two plus two is four', 'Mary went to the kitchen'], ['the weather is nice', 'hello'], [1]))
    assert vecs['pca'][1].shape == (H,) and vecs['reasoning'][1].shape == (H,)
    assert vecs['actadd'][0].shape == (len(t('Love').input_ids), H)
    for name, v in vecs.items():
        with v.apply(m, 0.0): assert torch.equal(logits(m, ids), base), name
        with v.apply(m, 3.0): assert not torch.allclose(logits(m, ids), base), name


def test_every_registered_steerer_builds_an_intervention():
    "A new method in STEERERS needs a row here: its inputs on the tiny model."
    m, t = tiny_model('llama')
    st = neuron_stats(m, t, LANGS, max_tokens=64, block=32)
    nr = {1: torch.tensor([3, 7])}
    vec = caa(m, t, PAIRS, [1])
    args = dict(caa=(m, t, PAIRS, [1]), pca=(m, t, PAIRS, [1]), actadd=(m, t, 'Love', 'Hate', [0]),
                reasoning=(m, t, ['Two plus two is four'], ['the weather is nice'], [1]), random=(vec, 1),
                neuron_edit=(nr, 'scale', 3.0), lape_deactivate=(nr,), lape_activate=(nr, st, 'de', 2.0),
                lape_replace=(nr, st, 'de'), lape_diff_mean=(nr, st, 'de'), lape_suppress=(nr,))
    assert set(args) == set(STEERERS)
    ids = t(PROMPT, return_tensors='pt').input_ids
    base = logits(m, ids)
    for name, a in args.items():
        iv = STEERERS[name](*a)
        assert isinstance(iv, Intervention), name
        with iv.apply(m, 1.0): assert not torch.equal(logits(m, ids), base), name
        with iv.apply(m, 0.0): assert torch.equal(logits(m, ids), base), name
    with pytest.raises(KeyError, match='registered: actadd, caa'): STEERERS['steer-all']


class Experts(nn.Module):
    "An MLP of a shape the lab does not know (a mixture of experts, say): no gate/up/down, no activation module."
    def __init__(self, d): super().__init__(); self.experts = nn.ModuleList([nn.Linear(d, d)])
    def forward(self, x): return self.experts[0](x)


@pytest.mark.parametrize('arch', ARCHS)
def test_clear_errors_where_a_method_cannot_apply(arch):
    m, t = tiny_model(arch)
    decoder_layers(m)[0].mlp = Experts(text_config(m).hidden_size)
    before = n_hooks(m)
    name = re.escape(type(m).__name__)
    with pytest.raises(ArchitectureError, match=name): neuron_stats(m, t, LANGS, max_tokens=32)
    with pytest.raises(ArchitectureError, match='not a gated or plain two-matrix MLP'):
        finetune_subnetwork(m, {0: [1]}, TEXTS, tokenizer=t, val=TEXTS[1:])
    with pytest.raises(ArchitectureError, match=name): NeuronEdits([NeuronEdit(0, [1], 'set', 0.0)]).patch(m)
    with pytest.raises(ArchitectureError, match=name): SteeringVector({0: torch.zeros(128)}, site='act').patch(m)
    with pytest.raises(ValueError, match='width 7'): SteeringVector({1: torch.zeros(7)}).patch(m)   # a vector of another model
    assert n_hooks(m) == before                                                    # a refused intervention leaves no hook
