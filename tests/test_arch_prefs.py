"Preference family across architectures: completion log-probs equal the model's own token log-probs, and one DPO step runs."
import copy, math
import pytest, torch
from llm_lab.tiny import tiny_model, TINY_ARCHS
from llm_lab.synthetic import sentiment_pairs
from llm_lab.prefs.logps import tokenize_completions, completion_logps
from llm_lab.prefs.trainer import PrefTrainer, PrefConfig


@pytest.mark.parametrize('arch', TINY_ARCHS)
def test_completion_logps_and_one_dpo_step(arch):
    model, tok = tiny_model(arch)
    data = sentiment_pairs(16, seed=0)
    # a left-padded batch of two completions of different lengths = each sequence scored alone from the model's full logits
    batch = tokenize_completions(tok, data.prompts[:2], [data.chosen[0], data.rejected[1] + ' and more'], max_length=64,
                                 padding_side='left')
    with torch.no_grad():
        got = completion_logps(model, batch).logps.double()
        for i in range(2):
            keep = batch.attention_mask[i].bool()
            ids, comp = batch.input_ids[i][keep][None], batch.completion_mask[i][keep]
            lp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1).gather(-1, ids[0, 1:, None])[:, 0]
            assert got[i].item() == pytest.approx((lp * comp[1:]).sum().item(), abs=1e-3), arch
    before = copy.deepcopy(model.state_dict())
    tr = PrefTrainer(model, tok, data, PrefConfig('dpo', steps=1, batch_size=4, lr=1e-3))
    hist = tr.fit()
    assert hist[0]['loss'] == pytest.approx(math.log(2), abs=1e-5)       # step 0: policy = reference
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())
