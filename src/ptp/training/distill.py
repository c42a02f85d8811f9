"""Distillation task: train a PTP drafter (o-ptp, c-ptp, mtp, inverse-ar) on packed token shards.

Validation (uniform z, fixed rows): for each window whose L slots all have targets, the number of
leading slots whose draft equals the teacher's pick with the same u (O-PTP: argmax; C-PTP:
pick(u, P)). ``mean_correct`` is its mean; the normalised histogram over 0..L goes into the
checkpoint's ``correct_hist`` (PQD reads it). For c-ptp and inverse-ar also the perplexity of the
slots on their target tokens next to the teacher's autoregressive perplexity on the same tokens
(inverse-ar: with u's found from the model's own CDFs, i.e. the model's own likelihood).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ptp.cache import crop_cache
from ptp.checkpoint_format import read_weights, update_config
from ptp.model import PTPModel, slot_offset
from ptp.sampling import SamplingConfig
from ptp.training.objectives import (
    SlotInputs,
    TeacherPass,
    inverse_ar_us,
    model_mode,
    slot_inputs,
    slot_losses,
    slot_predictions,
    teacher_pass,
    window_pass,
)
from ptp.training.packing import DataPosition, PackedBatch, PackingConfig, SequenceSource, eval_share, pack
from ptp.training.types import EvalResult, StepOutput
from ptp.training.windows import EVAL_STREAM, UNIFORM, VAL_WINDOW_SEED, Windows, choose_windows

DEFAULT_BETA = 0.3  # z ~ Beta(0.3, 0.3) inside teacher intervals (paper App. C)


@dataclass(frozen=True)
class DistillConfig:
    """What one distillation step computes."""

    objective: str = "o-ptp"  # o-ptp | c-ptp | mtp | inverse-ar
    windows_per_row: int = 32  # window starts drawn per packed row (distinct predictable tokens)
    beta: float = DEFAULT_BETA  # training z ~ Beta(beta, beta); validation always uses uniform z
    seed: int = 0  # seeds the training windows' starts and z per row (validation windows are fixed: VAL_WINDOW_SEED)

    def __post_init__(self) -> None:
        model_mode(self.objective)
        if isinstance(self.windows_per_row, bool) or not isinstance(self.windows_per_row, int) \
                or self.windows_per_row < 1:
            raise ValueError(f"windows_per_row must be an integer >= 1, got {self.windows_per_row!r}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")


def distill_step(model, base: PTPModel, batch: PackedBatch, cfg: DistillConfig,
                 sampling: SamplingConfig, beta: float | None = None, stream: int = 0) -> StepOutput:
    """Teacher pass, windows, u's, one window pass through ``model`` with gradient; summed loss."""
    device = base.device
    batch = batch.to(device)
    teacher = teacher_pass(base, batch, sampling)
    windows = choose_windows(batch, cfg.windows_per_row, base.cfg.window, slot_offset(model_mode(cfg.objective)),
                             cfg.beta if beta is None else beta, cfg.seed, stream).to(device)
    slots = slot_inputs(batch, windows, teacher)
    u = slots.u
    if cfg.objective == "inverse-ar":
        u = inverse_ar_us(base, batch, windows, slots.u[:, :, 0], slots.targets, teacher.cache, sampling.order)
    logits = window_pass(model, batch, windows, u, teacher.cache, base.cfg.first_slot_token)  # [B, N, L, V]
    per_slot = slot_losses(cfg.objective, logits, slots, windows, teacher.q)
    with torch.no_grad():
        right = (slot_predictions(cfg.objective, logits, slots.u_next, sampling.order) == slots.targets) & slots.valid
    return StepOutput(per_slot.sum(), slots.valid.sum().float(), right.sum().float(), batch.num_tokens)


@dataclass(frozen=True)
class EvalPass:
    """The validation pass over one batch: uniform-z windows and the drafter's predictions."""

    batch: PackedBatch
    teacher: TeacherPass
    windows: Windows
    slots: SlotInputs
    logits: torch.Tensor  # [B, N, L, V]
    right: torch.Tensor  # [B, N, L] bool: valid slots predicted right (argmax / pick, as decoding does)


@torch.no_grad()
def eval_pass(base: PTPModel, batch: PackedBatch, cfg: DistillConfig, sampling: SamplingConfig) -> EvalPass:
    """Teacher pass, uniform-z windows (the fixed validation stream) and one window pass."""
    batch = batch.to(base.device)
    teacher = teacher_pass(base, batch, sampling)
    windows = choose_windows(batch, cfg.windows_per_row, base.cfg.window, slot_offset(model_mode(cfg.objective)),
                             UNIFORM, VAL_WINDOW_SEED, EVAL_STREAM).to(base.device)
    slots = slot_inputs(batch, windows, teacher)
    logits = window_pass(base, batch, windows, slots.u, teacher.cache, base.cfg.first_slot_token)
    crop_cache(teacher.cache, batch.tokens.shape[1])
    right = (slot_predictions(cfg.objective, logits, slots.u_next, sampling.order) == slots.targets) & slots.valid
    return EvalPass(batch, teacher, windows, slots, logits, right)


@torch.no_grad()
def eval_counts(base: PTPModel, batch: PackedBatch, cfg: DistillConfig, sampling: SamplingConfig) -> torch.Tensor:
    """Summable validation counts of one batch (see ``EVAL_FIELDS``), uniform z."""
    length = base.cfg.window
    ev = eval_pass(base, batch, cfg, sampling)
    batch, teacher, windows, slots, logits, right = ev.batch, ev.teacher, ev.windows, ev.slots, ev.logits, ev.right
    loss = slot_losses(cfg.objective, logits, slots, windows, teacher.q)
    full = slots.valid.all(-1)  # [B, N]: windows whose L slots all have targets
    leading = right.to(torch.int64).cumprod(-1).sum(-1)[full]  # [W]
    hist = torch.bincount(leading, minlength=length + 1).double()
    if cfg.objective == "inverse-ar":  # the model's own likelihood: u's from its own CDFs
        u = inverse_ar_us(base, batch, windows, slots.u[:, :, 0], slots.targets, teacher.cache, sampling.order)
        logits = window_pass(base, batch, windows, u, teacher.cache)
    logp = torch.log_softmax(logits.float(), -1).gather(-1, slots.targets[..., None]).squeeze(-1)
    rows = (windows.targets - 1).clamp(min=0)  # teacher row predicting each target
    q_t = teacher.q.gather(1, rows.flatten(1)[:, :, None].expand(-1, -1, teacher.q.shape[-1]))
    q_t = q_t.gather(-1, slots.targets.flatten(1)[:, :, None]).view_as(logp)
    v = slots.valid
    sums = torch.stack([loss.sum(), v.sum(), right.sum(), -logp[v].sum(), -torch.log(q_t[v]).sum()]).double()
    zero = torch.zeros_like(logp)
    per_slot = torch.cat([  # [3L]: slot NLL, teacher NLL and slot count at each slot position j
        torch.where(v, -logp, zero).flatten(0, 1).sum(0),
        torch.where(v, -torch.log(q_t), zero).flatten(0, 1).sum(0),
        v.flatten(0, 1).sum(0).to(logp.dtype),
    ]).double()
    return torch.cat([sums, hist, per_slot])


EVAL_FIELDS = ("loss_sum", "slots", "right", "slot_nll", "teacher_nll")  # then the histogram, then per slot


def eval_size(window: int) -> int:
    """Length of the ``eval_counts`` vector: fields, histogram over 0..L, 3 per-slot sums of length L."""
    return len(EVAL_FIELDS) + window + 1 + 3 * window


def eval_result(totals: torch.Tensor, objective: str, window: int | None = None) -> EvalResult:
    """Metrics from summed ``eval_counts``.

    With ``window`` the per-slot sums after the histogram are read too (C-PTP layouts report
    ``slot{j}_ppl`` and ``slot{j}_ratio`` for the slot predicting the j-th token of the window,
    j = 1..L, against the teacher's perplexity on the same tokens); without it everything after the
    fields is the histogram.
    """
    loss_sum, slots, right, slot_nll, teacher_nll = totals[: len(EVAL_FIELDS)].tolist()
    end = len(totals) if window is None else len(EVAL_FIELDS) + window + 1
    hist = totals[len(EVAL_FIELDS) : end]
    windows = float(hist.sum())
    mean_correct = float((hist * torch.arange(len(hist), dtype=hist.dtype)).sum()) / max(windows, 1.0)
    slots = max(slots, 1.0)
    metrics = {"mean_correct": mean_correct, "val_loss": loss_sum / slots, "val_accuracy": right / slots,
               "val_windows": windows}
    if model_mode(objective) == "c-ptp":
        metrics["slot_ppl"] = math.exp(slot_nll / slots)
        metrics["teacher_ppl"] = math.exp(teacher_nll / slots)
        metrics["ppl_ratio"] = metrics["slot_ppl"] / metrics["teacher_ppl"]
        if window is not None:
            nll, teacher, count = totals[end:].view(3, window)
            for j in range(window):
                n = max(float(count[j]), 1.0)
                metrics[f"slot{j + 1}_ppl"] = math.exp(float(nll[j]) / n)
                metrics[f"slot{j + 1}_ratio"] = math.exp((float(nll[j]) - float(teacher[j])) / n)
    normalised = tuple(float(x) for x in (hist / max(windows, 1.0)).tolist())
    return EvalResult(metrics, mean_correct, normalised)


class DistillTask:
    """A PTPModel, its training stream and fixed validation rows (``ptp.training.types.Task``)."""

    def __init__(self, model: PTPModel, cfg: DistillConfig, packing: PackingConfig, train: SequenceSource,
                 val_batches: list[PackedBatch], sampling: SamplingConfig) -> None:
        if model.cfg.mode != model_mode(cfg.objective):
            raise ValueError(f"objective {cfg.objective!r} needs a model in mode {model_mode(cfg.objective)!r}, "
                             f"got {model.cfg.mode!r}")
        if model.cfg.sampling != sampling:
            raise ValueError(f"model sampling {model.cfg.sampling} differs from the training sampling {sampling}")
        model.teacher_fingerprint  # noqa: B018 -- computed now, while the weights are whole (FSDP shards them)
        self.model = model
        self.cfg = cfg
        self.packing = packing
        self.train = train
        self.val_batches = val_batches
        self.sampling = sampling

    def trainable(self) -> PTPModel:
        return self.model

    def train_batch(self, position: DataPosition) -> tuple[PackedBatch, DataPosition]:
        return pack(self.train, position, self.packing)

    def step(self, model, batch: PackedBatch) -> StepOutput:
        return distill_step(model, self.model, batch, self.cfg, self.sampling)

    def evaluate(self, reduce: Callable[[torch.Tensor], torch.Tensor], rank: int, world: int) -> EvalResult:
        was_training = self.model.training
        self.model.eval()
        totals = torch.zeros(eval_size(self.model.cfg.window), dtype=torch.float64)
        for batch in self.val_batches:
            rows, counts = eval_share(batch, rank, world)
            result = eval_counts(self.model, rows, self.cfg, self.sampling).cpu()
            if counts:
                totals += result
        self.model.train(was_training)
        return eval_result(reduce(totals.to(self.model.device)).cpu(), self.cfg.objective, self.model.cfg.window)

    def save_model(self, directory: Path, result: EvalResult | None, weights: dict[str, torch.Tensor]) -> None:
        self.model.save_pretrained(directory, tensors=weights)
        if result is not None and result.hist:
            _store_hist(Path(directory), result.hist)

    def load_model(self, directory: Path) -> None:
        tensors = read_weights(directory)
        expected = set(self.model.trainable_state_dict())
        if set(tensors) != expected:
            raise ValueError(f"{directory}: adapter keys do not match this model")
        self.model.load_state_dict(tensors, strict=False)

    def config_dict(self) -> dict:
        return {"distill": asdict(self.cfg), "packing": asdict(self.packing), "sampling": self.sampling.to_dict(),
                "ptp": self.model.cfg.to_dict()}


def _store_hist(directory: Path, hist: tuple[float, ...]) -> None:
    """Record the validation histogram as the checkpoint's ``correct_hist`` (PTPConfig is frozen, so the
    saved checkpoint is updated rather than the live model)."""
    update_config(directory, correct_hist=list(hist))

