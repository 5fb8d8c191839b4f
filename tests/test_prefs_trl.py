"Cross-implementation: the same tiny model and batch through TRL's trainers and through llm_lab.prefs give the same loss and gradients at step 0."
import tempfile, warnings
import pytest, torch
from datasets import Dataset
from llm_lab.models import tiny_llama
from llm_lab.prefs.logps import completion_logps, TokenizedBatch
from llm_lab.prefs import losses as L

warnings.filterwarnings('ignore', category=FutureWarning)
DATA = {'prompt': ['2+2=', 'The sky is', 'Hello', 'Name a fruit:'],
        'chosen': [' 4', ' blue today', ' world', ' apple, a red one'],
        'rejected': [' 5', ' green', ' there my good friend', ' car']}


def ours(model, batch, n_branches=2):
    "Our completion log-probs on TRL's own tensors, split into branches."
    b = TokenizedBatch(batch['input_ids'], batch['attention_mask'], batch['completion_mask'])
    out = completion_logps(model, b)
    return out.logps.chunk(n_branches), out.lengths.chunk(n_branches)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def compare(model, trl_loss, our_loss):
    model.zero_grad(); trl_loss.backward(); g_trl = grads(model)
    model.zero_grad(); our_loss.backward(); g_ours = grads(model)
    torch.testing.assert_close(our_loss, trl_loss.detach().to(our_loss.dtype), rtol=1e-5, atol=1e-6)
    assert g_trl.keys() == g_ours.keys() and g_trl
    for k in g_trl: torch.testing.assert_close(g_ours[k], g_trl[k], rtol=1e-4, atol=1e-6, msg=k)


CASES = [('sigmoid', {}, lambda lp, n, rlp, **_: L.dpo_loss(lp[0], lp[1], rlp[0], rlp[1], beta=0.1)),
         ('hinge', {}, lambda lp, n, rlp, **_: L.hinge_loss(lp[0], lp[1], rlp[0], rlp[1], beta=0.1)),
         ('ipo', {}, lambda lp, n, rlp, **_: L.ipo_loss(lp[0], lp[1], rlp[0], rlp[1], n[0], n[1], beta=0.1)),
         ('robust', {'label_smoothing': 0.2}, lambda lp, n, rlp, **_: L.robust_dpo_loss(lp[0], lp[1], rlp[0], rlp[1], beta=0.1, label_smoothing=0.2)),
         ('sigmoid_norm', {}, lambda lp, n, rlp, **_: L.ln_dpo_loss(lp[0], lp[1], rlp[0], rlp[1], n[0], n[1], beta=0.1))]


@pytest.mark.parametrize('loss_type,extra,fn', CASES, ids=[c[0] for c in CASES])
def test_dpo_trainer_parity(loss_type, extra, fn):
    from trl import DPOConfig, DPOTrainer
    model, tok = tiny_llama(seed=1); ref, _ = tiny_llama(seed=2)   # a reference that differs, so margins are not 0
    args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, beta=0.1, loss_type=[loss_type], report_to=[],
                     max_length=64, use_cpu=True, bf16=False, **extra)
    tr = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_dict(DATA), processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    model.train()
    trl_loss = tr.compute_loss(model, batch)
    lp, n = ours(model, batch)
    with torch.no_grad(): rlp, _ = ours(ref, batch)
    our_loss, metrics = fn(lp, n, rlp)
    compare(model, trl_loss, our_loss)


def test_dpo_step0_is_ln2_through_trl_and_ours():
    from trl import DPOConfig, DPOTrainer
    model, tok = tiny_llama(seed=1); ref, _ = tiny_llama(seed=1)
    args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, report_to=[], max_length=64, use_cpu=True)
    tr = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_dict(DATA), processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    # TRL 1.16 gives 0.69319 here, not ln 2 to 1e-6, although policy and reference are the same weights: its
    # policy forward (fused lm-head log-probs) and reference forward differ at the 1e-5 level. Ours is exact.
    assert tr.compute_loss(model, batch).item() == pytest.approx(0.693147, abs=1e-4)
    lp, _ = ours(model, batch)
    loss, m = L.dpo_loss(lp[0], lp[1], lp[0].detach(), lp[1].detach())
    assert loss.item() == pytest.approx(0.693147, abs=1e-6) and m['rewards/margins'] == 0 and m['rewards/accuracies'] == 0


TPO_CASES = [('sigmoid', 0.05, {}, lambda lp, n: L.tpo_loss(lp[0], lp[1], lp[2], n[2], beta=0.1, alpha=0.05)),
             ('tpo-l', 0.05, {'tpo_l_gamma': 0.5},
              lambda lp, n: L.tpo_loss(lp[0], lp[1], lp[2], n[2], n[0], n[1], beta=0.1, alpha=0.05, gamma=0.5, length_normalized=True))]


@pytest.mark.parametrize('loss_type,alpha,extra,fn', TPO_CASES, ids=[c[0] for c in TPO_CASES])
def test_tpo_trainer_parity(loss_type, alpha, extra, fn):
    from trl.experimental.tpo import TPOConfig, TPOTrainer
    model, tok = tiny_llama(seed=1)
    data = {**DATA, 'reference': [' 4', ' blue', ' world!', ' a banana']}
    args = TPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, beta=0.1, loss_type=loss_type, tpo_alpha=alpha,
                     report_to=[], max_length=64, use_cpu=True, bf16=False, **extra)
    tr = TPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(data), processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    model.train()
    trl_loss = tr.compute_loss(model, batch)
    lp, n = ours(model, batch, 3)
    our_loss, _ = fn(lp, n)
    compare(model, trl_loss, our_loss)


def cpo_batch(batch):
    "Our TokenizedBatch from TRL's CPO/ORPO batch: the completion is where labels are not -100."
    mk = lambda p: TokenizedBatch(batch[f'{p}_input_ids'], batch[f'{p}_attention_mask'], (batch[f'{p}_labels'] != -100).long())
    return mk('chosen'), mk('rejected')


CPO_CASES = [('sigmoid', {'cpo_alpha': 1.0}, lambda c, r: L.cpo_loss(c.logps, r.logps, c.lengths, beta=0.1, alpha=1.0)),
             ('simpo', {'cpo_alpha': 0.0, 'simpo_gamma': 0.5},
              lambda c, r: L.simpo_loss(c.logps, r.logps, c.lengths, r.lengths, beta=0.1, gamma_beta_ratio=0.5 / 0.1))]


@pytest.mark.parametrize('loss_type,extra,fn', CPO_CASES, ids=[c[0] for c in CPO_CASES])
def test_cpo_trainer_parity(loss_type, extra, fn):
    "TRL's CPOTrainer: CPO (with its NLL term) and SimPO (cpo_alpha=0, TRL's simpo_gamma = our beta * gamma_beta_ratio)."
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    model, tok = tiny_llama(seed=1)
    args = CPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, beta=0.1, loss_type=loss_type, report_to=[],
                     max_length=64, use_cpu=True, **extra)
    tr = CPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(DATA), processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    model.train()
    trl_loss = tr.compute_loss(model, batch)
    c, r = (completion_logps(model, b) for b in cpo_batch(batch))
    our_loss, _ = fn(c, r)
    compare(model, trl_loss, our_loss)


def test_orpo_odds_ratio_parity():
    "TRL's ORPOTrainer: the same average log-probs and the same odds-ratio term (TRL's NLL also counts prompt tokens, ours does not)."
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    model, tok = tiny_llama(seed=1)
    args = ORPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, beta=0.1, report_to=[], max_length=64, use_cpu=True)
    tr = ORPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(DATA), processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    out = tr.concatenated_forward(model, batch)
    trl_c, trl_r = out[0], out[1]
    c, r = (completion_logps(model, b) for b in cpo_batch(batch))
    torch.testing.assert_close(c.mean, trl_c.to(c.mean.dtype), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.mean, trl_r.to(r.mean.dtype), rtol=1e-5, atol=1e-6)
    trl_or = tr.odds_ratio_loss(trl_c, trl_r)[0].mean()          # beta * log sigma(log odds)
    loss, m = L.orpo_loss(c.logps, r.logps, c.lengths, r.lengths, beta=0.1)
    nll = -c.logps.sum() / c.lengths.sum()
    torch.testing.assert_close(loss - nll, -trl_or.to(loss.dtype), rtol=1e-5, atol=1e-6)


def test_kto_trainer_parity():
    "TRL's KTOTrainer: unpaired examples, the KL point from its mismatched completions; same loss and gradients."
    from trl import KTOConfig, KTOTrainer
    model, tok = tiny_llama(seed=1); ref, _ = tiny_llama(seed=2)
    data = {'prompt': DATA['prompt'], 'completion': [' 4', ' green', ' world', ' car'], 'label': [True, False, True, False]}
    args = KTOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, beta=0.1, report_to=[], max_length=64, use_cpu=True)
    tr = KTOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_dict(data), processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    model.train()
    trl_loss = tr.compute_loss(model, batch)
    tb = lambda p='': TokenizedBatch(batch[f'{p}input_ids'], batch[f'{p}attention_mask'], batch[f'{p}completion_mask'])
    lp, kl = completion_logps(model, tb()).logps, completion_logps(model, tb('KL_')).logps
    with torch.no_grad(): rlp, rkl = completion_logps(ref, tb()).logps, completion_logps(ref, tb('KL_')).logps
    our_loss, _ = L.kto_loss(lp, rlp, batch['label'].bool(), kl, rkl, beta=0.1)
    compare(model, trl_loss, our_loss)
