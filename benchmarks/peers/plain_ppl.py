"""Imported by peer scripts (any peer env, no llm_lab there): the perplexity loop every peer evaluates with, so that its
numbers compare with `llm_lab.evaluate.perplexity(model, tok, ids, context=c)` (stride = context)."""
import math
import torch


@torch.no_grad()
def plain_ppl(model, ids: torch.Tensor, context: int) -> float:
    "exp of the mean NLL of every predicted token over non-overlapping windows of `context` tokens of `ids` (1-D)."
    total, n = 0.0, 0
    for b in range(0, len(ids), context):
        w = ids[b:b + context]
        if len(w) < 2: continue
        lp = torch.log_softmax(model(w[None]).logits[0, :-1].double(), -1)
        total -= lp.gather(1, w[1:, None]).sum().item(); n += len(w) - 1
    return math.exp(total / n)
