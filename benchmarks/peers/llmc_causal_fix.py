"""Imported by the llmcompressor peer scripts (llmcompressor 0.14, transformers 5.17): keeps attention causal inside
llmcompressor's sequential pipeline on models that build their mask through a local alias (Phi-3:
`mask_function = create_causal_mask if ... else ...`).

Why: the pipeline's fx tracer cannot see through the alias, so the mask call becomes a leaf of the traced graph and the
model config it receives is re-created in the graph as `ConfigClass(**config.to_dict())`. `to_dict()` drops the attention
implementation (llmcompressor forces eager during calibration), so the re-created config has none, `create_causal_mask`
returns None, and eager attention without a mask is bidirectional: every Hessian after the first attention is built from
wrong activations (measured on a tiny Phi-3: layer 0 o_proj's input off by up to 0.43, 78% of GPTQ codes equal to ours;
with this patch 100%). Llama calls `create_causal_mask` directly, which the pipeline wraps, so it was never affected.
The patch carries the live config's attention implementation into the re-created one; nothing else changes."""
from transformers import PretrainedConfig
import llmcompressor.pipelines.sequential.helpers as _seq

_create_arg = _seq.SequentialTracer.create_arg


def _create_arg_keeping_attention(self, a):
    if isinstance(a, PretrainedConfig):
        kwargs = {k: self.create_arg(v) for k, v in a.to_dict().items()}
        kwargs['attn_implementation'] = a._attn_implementation
        return self.create_node('call_function', a.__class__, (), kwargs)
    return _create_arg(self, a)


_seq.SequentialTracer.create_arg = _create_arg_keeping_attention
