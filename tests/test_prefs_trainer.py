"The preference trainer beyond the notebook: LoRA through peft, online reference = precomputed reference, every loss runs."
import copy
import pytest, torch
from llm_lab.models import tiny_llama
from llm_lab.synthetic import sentiment_pairs, arithmetic_pairs
from llm_lab.prefs.trainer import PrefTrainer, PrefConfig
from llm_lab.prefs.losses import LOSSES


def test_lora_trains_only_adapters():
    model, tok = tiny_llama(seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = PrefConfig('dpo', steps=6, batch_size=4, lr=5e-3, lora=dict(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj']))
    tr = PrefTrainer(model, tok, sentiment_pairs(32), cfg)
    hist = tr.fit()
    peft_model = tr.acc.unwrap_model(tr.model)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all('lora_' in n for n in trainable)
    changed = [n for n, p in peft_model.named_parameters() if 'lora_B' in n and p.abs().sum() > 0]
    assert changed, 'LoRA B matrices stayed at zero'
    base = peft_model.get_base_model()
    for n, p in base.named_parameters():
        if 'lora_' in n: continue
        key = n.replace('base_layer.', '')
        assert torch.equal(p, before[key]), f'base weight {n} changed'
    assert hist[-1]['loss'] < hist[0]['loss']


def test_online_reference_equals_precomputed():
    "Same pairs, same steps: a frozen reference run every step gives the losses of precomputed reference log-probs."
    data = sentiment_pairs(32)
    runs = []
    for online in (False, True):
        model, tok = tiny_llama(seed=0)
        runs.append(PrefTrainer(model, tok, data, PrefConfig('dpo', steps=3, batch_size=4, lr=1e-3, online_reference=online)).fit())
    assert [r['loss'] for r in runs[0]] == pytest.approx([r['loss'] for r in runs[1]], rel=1e-5)


@pytest.mark.parametrize('loss', sorted(LOSSES))
def test_every_loss_trains(loss):
    model, tok = tiny_llama(seed=0)
    data = arithmetic_pairs(16)   # has gold answers, for TPO
    hist = PrefTrainer(model, tok, data, PrefConfig(loss, steps=2, batch_size=4, lr=1e-3)).fit()
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h['loss'])) for h in hist)
