"""Values passed between a training task and the training loop.

A *task* (distillation, pretraining) knows its model, data and loss; the loop (``ptp.training.loop``)
knows optimisation, accelerate, checkpoints and logging. The loop calls a task through ``Task``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ptp.training.packing import DataPosition, PackedBatch


@dataclass(frozen=True)
class StepOutput:
    """One micro-batch on one process.

    The loop back-propagates ``loss_sum`` divided by the valid-target count of the whole global
    batch (all processes), so a run's loss does not depend on how rows are split over processes.
    """

    loss_sum: torch.Tensor  # scalar, with grad: summed per-target loss
    count: torch.Tensor  # scalar: valid targets (slots or next tokens)
    correct: torch.Tensor  # scalar: targets predicted right (argmax / pick as in decoding)
    tokens: int  # real (non-padding) tokens in the micro-batch


@dataclass(frozen=True)
class EvalResult:
    """A validation pass: named scalar metrics and the one that selects the best checkpoint."""

    metrics: dict[str, float]  # e.g. {"mean_correct": 2.3, "val_loss": 1.1}
    score: float  # higher is better (mean_correct, or -val_loss for pretraining)
    hist: tuple[float, ...] = field(default=())  # normalised leading-correct histogram (PTP only)


class Task(Protocol):
    """What the loop needs from a training job."""

    def trainable(self) -> nn.Module:
        """The module whose parameters require grad (wrapped by accelerate, or sharded)."""

    def train_batch(self, position: DataPosition) -> tuple[PackedBatch, DataPosition]:
        """The next global micro-batch (all processes' rows) and the position after it."""

    def step(self, model: nn.Module, batch: PackedBatch) -> StepOutput:
        """Forward one micro-batch (this process's rows) through ``model`` (possibly DDP-wrapped)."""

    def evaluate(self, reduce: Callable[[torch.Tensor], torch.Tensor], rank: int, world: int) -> EvalResult:
        """Validation on this process's share, summed over processes with ``reduce``."""

    def save_model(self, directory: Path, result: EvalResult | None, weights: dict[str, torch.Tensor]) -> None:
        """Write the loadable model files (main process only); ``weights`` are the full trainable
        parameters by name (gathered when the model is sharded)."""

    def load_model(self, directory: Path) -> None:
        """Restore the trainable weights written by ``save_model``."""

    def config_dict(self) -> dict:
        """The task's configuration, recorded in checkpoints."""
