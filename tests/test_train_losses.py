"""Losses, u's and metrics of the training step on hand-computed cases."""

import math

import pytest
import torch

import ptp
from ptp.sampling import SamplingConfig, pick, process
from ptp.testing import randomize_adapters, tiny_teacher
from ptp.training.distill import EVAL_FIELDS, DistillConfig, distill_step, eval_counts, eval_result, eval_size
from ptp.training.objectives import (
    SlotInputs,
    inverse_ar_us,
    slot_inputs,
    slot_losses,
    slot_predictions,
    teacher_pass,
    window_pass,
)
from ptp.training.windows import Windows, choose_windows, token_intervals, window_us
from test_train_windows import make_batch


def one_window(targets, valid, slot_offset=0):
    """A Windows of one row, one window at row index 1 (values only matter where used)."""
    length = len(targets)
    t = torch.tensor([[list(range(1 + slot_offset, 1 + slot_offset + length))]])
    return Windows(torch.tensor([[1]]), t, torch.tensor([[valid]]), torch.full((1, 1, length + 1), 0.5), slot_offset)


def test_o_ptp_cross_entropy_by_hand():
    logits = torch.tensor([[[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])  # [1, 1, 2, 3]
    slots = SlotInputs(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.tensor([[[True, False]]]),
                       torch.tensor([[[0, 2]]]))
    loss = slot_losses("o-ptp", logits, slots, one_window([0, 2], [True, False]), None)
    expected = -(2.0 - math.log(math.exp(2) + 2))
    assert loss[0, 0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert loss[0, 0, 1].item() == 0.0  # invalid slot


def test_c_ptp_kl_by_hand_with_a_truncated_teacher():
    # Teacher rows (row i: distribution of token i + 1); the window at s = 1 has slot 0 -> row 1.
    q = torch.tensor([[[1.0, 0.0, 0.0], [0.75, 0.25, 0.0], [0.0, 0.0, 1.0]]])  # [1, S=3, V=3]
    logits = torch.log(torch.tensor([[[[0.5, 0.25, 0.25]]]]))  # P of slot 0
    slots = SlotInputs(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.tensor([[[True]]]), torch.tensor([[[1]]]))
    windows = one_window([0], [True], slot_offset=1)  # slot 0 targets row index 2: Q from teacher row 1
    loss = slot_losses("c-ptp", logits, slots, windows, q)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.25)  # zero-mass token adds nothing
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_u_lies_in_the_teacher_interval_of_the_token():
    probs = torch.tensor([[[0.2, 0.5, 0.3], [0.6, 0.0, 0.4], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]]])  # [1, 4, 3]
    tokens = torch.tensor([[0, 1, 2, 2]])  # t_1 = 1 under row 0, t_2 = 2 under row 1, t_3 = 2 under row 2
    left, right = token_intervals(probs, tokens)
    assert torch.allclose(left[0, 1:], torch.tensor([0.2, 0.6, 0.2]))
    assert torch.allclose(right[0, 1:], torch.tensor([0.7, 1.0, 1.0]))
    windows = Windows(torch.tensor([[1]]), torch.tensor([[[1, 2]]]), torch.tensor([[[True, True]]]),
                      torch.tensor([[[0.0, 0.999, 0.5]]]), 0)
    u, on_support = window_us(left, right, windows)
    assert on_support.all()
    assert u[0, 0, 0].item() == pytest.approx(0.2) and 0.6 < u[0, 0, 1].item() < 1.0
    for k in range(3):  # the teacher's pick with that u is the token itself
        assert int(pick(u[0, 0, k], probs[0, k])) == int(tokens[0, k + 1])


def test_token_intervals_follow_the_cdf_order():
    probs = torch.tensor([[[0.2, 0.5, 0.3], [0.6, 0.0, 0.4], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]]])  # [1, 4, 3]
    tokens = torch.tensor([[0, 1, 2, 2]])
    left, right = token_intervals(probs, tokens, "argmax")  # each row's argmax owns [0, max P)
    assert torch.allclose(left[0, 1:], torch.tensor([0.0, 0.6, 0.0]))
    assert torch.allclose(right[0, 1:], torch.tensor([0.5, 1.0, 0.8]))


def test_zero_mass_token_invalidates_the_rest_of_the_window():
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0, sharpness=3.0), mode="o-ptp", lora_rank=4, window=4)
    sampling = SamplingConfig(temperature=1.0, top_k=2)
    batch = make_batch(((18,),), seq_len=18)
    teacher = teacher_pass(model, batch, sampling)
    windows = choose_windows(batch, 6, 4, 0, 0.3, seed=0)
    slots = slot_inputs(batch, windows, teacher)
    support = teacher.right > teacher.left  # [1, S]
    for n in range(6):
        s = int(windows.starts[0, n])
        ok = [bool(support[0, s : s + j + 1].all()) and s + j < 18 for j in range(4)]
        assert slots.valid[0, n].tolist() == ok


def test_c_ptp_prediction_is_pick_with_the_next_u():
    logits = torch.log(torch.tensor([[[[0.2, 0.5, 0.3]]]]))
    for u, token in [(0.1, 0), (0.2, 1), (0.69, 1), (0.7, 2), (0.99, 2)]:
        pred = slot_predictions("c-ptp", logits, torch.tensor([[[u]]]))
        assert int(pred) == token
    assert int(slot_predictions("o-ptp", logits, torch.tensor([[[0.99]]]))) == 1


@pytest.mark.parametrize("order", ["id", "sorted"])
def test_inverse_ar_us_are_compatible_with_the_models_own_cdfs(order):
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0, sharpness=2.0), mode="c-ptp", lora_rank=4, window=4)
    randomize_adapters(model, 0)
    model.eval()
    batch = make_batch(((10, 8),), seq_len=18)
    teacher = teacher_pass(model, batch, model.cfg.sampling)
    windows = choose_windows(batch, 5, 4, 1, 1.0, seed=0)
    slots = slot_inputs(batch, windows, teacher)
    u = inverse_ar_us(model, batch, windows, slots.u[:, :, 0], slots.targets, teacher.cache, order)
    assert teacher.cache.get_seq_length() == 18
    assert torch.equal(u[:, :, 0], slots.u[:, :, 0])  # the first u comes from the frozen base row
    with torch.no_grad():
        logits = window_pass(model, batch, windows, u, teacher.cache)  # [1, N, L, V]
    probs = torch.softmax(logits.float(), -1)
    for j in range(3):  # slot j's P picks the data token t_{s+j+1} with u_{s+j+1}
        picked = pick(u[:, :, j + 1], probs[:, :, j], order)
        assert torch.equal(picked[slots.valid[:, :, j]], slots.targets[:, :, j][slots.valid[:, :, j]])


@pytest.mark.parametrize("objective", ["o-ptp", "c-ptp", "mtp", "inverse-ar"])
def test_step_backpropagates_into_adapters_only(objective):
    mode = {"o-ptp": "o-ptp", "mtp": "mtp"}.get(objective, "c-ptp")
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0), mode=mode, lora_rank=4, window=4)
    batch = make_batch(((9, 9), (14,)), seq_len=18)
    out = distill_step(model, model, batch, DistillConfig(objective=objective, windows_per_row=4), model.cfg.sampling)
    assert out.count > 0 and torch.isfinite(out.loss_sum)
    out.loss_sum.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.u_embed.parameters())
    lora_grads = [p.grad for p in model.lora.parameters()]
    assert all(g is not None for g in lora_grads)


def test_mean_correct_counts_leading_right_slots_of_full_windows(monkeypatch):
    """A wrong slot ends a window's run (later right slots do not count); windows with invalid slots are left out."""
    import dataclasses

    import ptp.training.distill as distill

    real = distill.eval_pass
    seen = {}

    def pattern(base, batch, cfg, sampling):  # slot j right iff j != k_w, for k_w = 0, 1, ..., L cycling
        ev = real(base, batch, cfg, sampling)
        b, n, length = ev.right.shape
        k = (torch.arange(b * n) % (length + 1)).view(b, n, 1)
        right = (torch.arange(length) != k) & ev.slots.valid
        seen["leading"] = k.squeeze(-1)[ev.slots.valid.all(-1)]
        return dataclasses.replace(ev, right=right)

    monkeypatch.setattr(distill, "eval_pass", pattern)
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0), mode="o-ptp", lora_rank=4, window=3)
    batch = make_batch(((7, 11), (18,)), seq_len=18)
    counts = eval_counts(model, batch, DistillConfig(objective="o-ptp", windows_per_row=6), model.cfg.sampling)
    result = eval_result(counts, "o-ptp", window=3)
    want = torch.bincount(seen["leading"], minlength=4).double()
    assert 0 < len(seen["leading"]) < 12  # some windows are full, some are not
    assert result.metrics["val_windows"] == len(seen["leading"])
    assert result.hist == pytest.approx(tuple((want / want.sum()).tolist()))
    assert result.score == pytest.approx(float(seen["leading"].double().mean()))


def test_cptp_eval_reports_consistent_slot_perplexities():
    """C-PTP validation: per-slot perplexities combine into the overall ones; a histogram by hand."""
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0, sharpness=2.0), mode="c-ptp", lora_rank=4, window=3)
    batch = make_batch(((18,),), seq_len=18)
    cfg = DistillConfig(objective="c-ptp", windows_per_row=4)
    counts = eval_counts(model, batch, cfg, model.cfg.sampling)
    assert len(counts) == eval_size(3)
    result = eval_result(counts, "c-ptp", window=3)
    assert len(result.hist) == 4 and sum(result.hist) == pytest.approx(1.0)
    assert result.metrics["teacher_ppl"] > 1.0 and result.metrics["val_windows"] > 0
    # Per-slot perplexities: their count-weighted log-mean is the overall one, on the same tokens.
    slots = counts[len(EVAL_FIELDS) + 4 :].view(3, 3)
    assert float(slots[2].sum()) == pytest.approx(float(counts[1]))
    assert float(slots[0].sum()) == pytest.approx(float(counts[3])) and float(slots[1].sum()) == pytest.approx(
        float(counts[4]))
    weights = slots[2] / slots[2].sum()
    log_mean = sum(float(w) * math.log(result.metrics[f"slot{j + 1}_ppl"]) for j, w in enumerate(weights))
    assert log_mean == pytest.approx(math.log(result.metrics["slot_ppl"]))
    ratios = sum(float(w) * math.log(result.metrics[f"slot{j + 1}_ratio"]) for j, w in enumerate(weights))
    assert ratios == pytest.approx(math.log(result.metrics["ppl_ratio"]))
    # A histogram by hand: counts 0, 2, 3 -> mean 5/3.
    totals = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    by_hand = eval_result(totals, "o-ptp")
    assert by_hand.score == pytest.approx(5 / 3) and by_hand.hist == pytest.approx((1 / 3, 0, 1 / 3, 1 / 3))


def test_teacher_distribution_uses_the_stored_sampling():
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0), mode="c-ptp", lora_rank=4, window=4)
    batch = make_batch(((18,),), seq_len=18)
    sampling = SamplingConfig(temperature=0.5, top_k=5, top_p=0.9)
    teacher = teacher_pass(model, batch, sampling)
    with torch.no_grad():
        logits = model.teacher(batch.tokens, position_ids=batch.positions).logits
    torch.testing.assert_close(teacher.q, process(logits, sampling), atol=1e-5, rtol=1e-4)
    assert int((teacher.q[0] > 0).sum(-1).max()) <= 5


def test_validation_windows_do_not_depend_on_the_training_seed():
    """Runs with other distill.seed values are validated on the same windows and u's (comparable scores)."""
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0), mode="o-ptp", lora_rank=4, window=3)
    batch = make_batch(((7, 11), (18,)), seq_len=18)
    counts = [eval_counts(model, batch, DistillConfig(windows_per_row=6, seed=seed), model.cfg.sampling)
              for seed in (0, 1)]
    assert torch.equal(counts[0], counts[1])
    train = [distill_step(model, model, batch, DistillConfig(windows_per_row=6, seed=seed), model.cfg.sampling)
             for seed in (0, 1)]
    assert not torch.equal(train[0].loss_sum, train[1].loss_sum)  # while training windows follow the seed
