"""Metrics files of a run: metrics.csv (training progress), eval.csv (validations), TensorBoard if installed.

On resume from step k, rows after step k (written by the killed run after its last checkpoint) are
dropped, so the files hold one continuous curve.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ptp.training.types import EvalResult

TRAIN_CSV = "metrics.csv"
EVAL_CSV = "eval.csv"
TRAIN_FIELDS = ("step", "loss", "accuracy", "lr", "tokens_per_s", "elapsed_s", "grad_norm")


def _truncate(path: Path, after_step: int, header: tuple[str, ...] | None = None) -> list[str] | None:
    """Drop rows with step > after_step; returns the header (None if there is no file).

    With ``header`` the file gets that header (a run resumed by a version with more columns).
    """
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return None
    header, kept = list(header or rows[0]), [r for r in rows[1:] if r and int(r[0]) <= after_step]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])
    return header


class MetricsWriter:
    """Appends progress and evaluation rows; main process only."""

    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.train_path, self.eval_path = run_dir / TRAIN_CSV, run_dir / EVAL_CSV
        if _truncate(self.train_path, start_step, TRAIN_FIELDS) is None:
            with open(self.train_path, "w", newline="") as handle:
                csv.writer(handle).writerow(TRAIN_FIELDS)
        self.eval_header = _truncate(self.eval_path, start_step)
        self.board = _board(run_dir / "tensorboard", start_step) if tensorboard else None

    def log_train(self, progress, elapsed_s: float) -> None:
        row = [progress.step, progress.loss, progress.accuracy, progress.lr, progress.tokens_per_s, elapsed_s,
               progress.grad_norm]
        with open(self.train_path, "a", newline="") as handle:
            csv.writer(handle).writerow(row)
        if self.board is not None:
            for name in ("loss", "accuracy", "lr", "tokens_per_s", "grad_norm"):
                self.board.add_scalar(f"train/{name}", getattr(progress, name), progress.step)

    def log_eval(self, step: int, result: EvalResult) -> None:
        if self.eval_header is None:
            self.eval_header = ["step", *sorted(result.metrics)]
            with open(self.eval_path, "w", newline="") as handle:
                csv.writer(handle).writerow(self.eval_header)
        row = [step, *(result.metrics.get(name, "") for name in self.eval_header[1:])]
        with open(self.eval_path, "a", newline="") as handle:
            csv.writer(handle).writerow(row)
        if self.board is not None:
            for name, value in result.metrics.items():
                self.board.add_scalar(f"val/{name}", value, step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _board(directory: Path, start_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory), purge_step=start_step + 1 if start_step else None)
