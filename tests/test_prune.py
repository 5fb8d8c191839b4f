"""Pruning family: LLM-Pruner's group importance and pruning against torch-pruning (its dependency graph and importance criteria).

torch-pruning applies to the architectures whose MLP has separate projections: on Phi-3 its graph sees the fused gate_up_proj as
one layer and prunes its rows as independent channels (not a neuron's gate/up pair), and on GPT-NeoX it fails to build its
dependency graph (the concat of rotated and pass-through query channels), so those two are not compared."""
import copy
import pytest
import torch

tp = pytest.importorskip('torch_pruning')
from llm_lab.tiny import tiny_llama, tiny_model
from llm_lab.arch import decoder_layers, mlp_projections, layer_shapes
from llm_lab.prune.llm_pruner import grad_stats, group_importance, prune_groups


def _graph(model, ids):
    return tp.DependencyGraph().build_dependency(model, example_inputs=ids, output_transform=lambda o: o.logits)


CRITERIA = {  # ours -> torch-pruning's criterion with the same per-vector score and a plain sum over the group
    'element1': lambda: tp.importance.GroupTaylorImportance(group_reduction='sum', normalizer=None),
    'vector': lambda: tp.importance.GroupTaylorImportance(group_reduction='sum', normalizer=None, multivariable=True),
    'l2': lambda: tp.importance.GroupMagnitudeImportance(p=2, group_reduction='sum', normalizer=None),
}


@pytest.fixture(scope='module')
def tiny64():
    torch.manual_seed(0)
    m, _ = tiny_llama(num_hidden_layers=3, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, seed=1)
    m = m.double()
    calib = torch.randint(0, m.config.vocab_size, (3, 16))
    return m, calib, grad_stats(m, calib)


@pytest.mark.parametrize('estimator', list(CRITERIA))
def test_neuron_scores_match_torch_pruning(tiny64, estimator):
    "torch-pruning's dependency graph finds the neuron's group (gate/up rows, down column); its criterion gives our scores (float64)."
    m, calib, stats = tiny64
    ours = group_importance(m, calib, estimator, stats=stats).neurons
    dg = _graph(m, calib[:1])
    for l, layer in enumerate(decoder_layers(m)):
        mlp = layer.mlp
        for mod in (mlp.gate_proj, mlp.up_proj, mlp.down_proj): mod.weight.grad = stats.grad[mod].clone()
        group = dg.get_pruning_group(mlp.gate_proj, tp.prune_linear_out_channels, idxs=list(range(mlp.gate_proj.out_features)))
        touched = {dep.target.module for dep, _ in group if isinstance(dep.target.module, torch.nn.Linear)}
        assert touched == {mlp.gate_proj, mlp.up_proj, mlp.down_proj}, touched
        theirs = CRITERIA[estimator]()(group)            # torch-pruning sums the group in float32 even for float64 weights
        assert theirs.shape == ours[l].shape and torch.allclose(ours[l], theirs.double(), rtol=1e-6, atol=0), (estimator, l)
    for p in m.parameters(): p.grad = None


def test_mlp_pruning_matches_torch_pruning_pruner(tiny64):
    "Local MLP pruning of layers 1-2 by first-order Taylor: torch-pruning's pruner (its defaults) keeps the same neurons as ours."
    m, calib, stats = tiny64
    ours = prune_groups(copy.deepcopy(m), group_importance(m, calib, 'element1', stats=stats), 0.25, layers=[1, 2], prune_heads=False)
    theirs = copy.deepcopy(m)
    for (a, b) in zip(m.modules(), theirs.modules()):
        if isinstance(a, torch.nn.Linear) and a in stats.grad: b.weight.grad = stats.grad[a].clone()
    keep = {p for l in decoder_layers(theirs)[1:] for p in (l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj)}
    ignored = [mod for mod in theirs.modules() if isinstance(mod, torch.nn.Linear) and mod not in keep]
    pruner = tp.pruner.BasePruner(theirs, calib[:1], importance=tp.importance.GroupTaylorImportance(), pruning_ratio=0.25,
                                  ignored_layers=ignored, output_transform=lambda o: o.logits)
    pruner.step()
    assert [s['intermediate_size'] for s in layer_shapes(ours)] == [96, 72, 72]
    for a, b in zip(decoder_layers(ours), decoder_layers(theirs)):
        for n in ('gate_proj', 'up_proj', 'down_proj'):
            assert torch.equal(getattr(a.mlp, n).weight, getattr(b.mlp, n).weight), n
    with torch.no_grad(): assert torch.equal(ours(calib).logits, theirs(calib).logits)


@pytest.mark.parametrize('arch', ['mistral', 'qwen2', 'qwen3', 'gemma3'])
def test_mlp_pruning_matches_torch_pruning_other_archs(arch):
    "The same comparison on the other architectures with separate MLP projections (MLP groups found through llm_lab.arch)."
    kw = dict(layer_types=['sliding_attention', 'full_attention', 'sliding_attention']) if arch == 'gemma3' else {}
    m = tiny_model(arch, num_hidden_layers=3, intermediate_size=96, seed=1, **kw)[0].double()
    calib = torch.randint(3, 259, (3, 16), generator=torch.Generator().manual_seed(0))
    stats = grad_stats(m, calib)
    ours = prune_groups(copy.deepcopy(m), group_importance(m, calib, 'element1', stats=stats), 0.25, layers=[1, 2], prune_heads=False)
    theirs = copy.deepcopy(m)
    for a, b in zip(m.modules(), theirs.modules()):
        if isinstance(a, torch.nn.Linear) and a in stats.grad: b.weight.grad = stats.grad[a].clone()
    keep = {p.module for l in (1, 2) for p in mlp_projections(theirs, l)[0]}
    ignored = [mod for mod in theirs.modules() if isinstance(mod, torch.nn.Linear) and mod not in keep]
    tp.pruner.BasePruner(theirs, calib[:1], importance=tp.importance.GroupTaylorImportance(), pruning_ratio=0.25,
                         ignored_layers=ignored, output_transform=lambda o: o.logits).step()
    assert [s['intermediate_size'] for s in layer_shapes(ours)] == [96, 72, 72]
    assert all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
