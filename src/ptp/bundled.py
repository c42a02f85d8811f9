"""Where the embedded default model lives (trained and shipped by the repo, see README)."""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "assets" / "default-model"  # PTP checkpoint with teacher/ and tokenizer


def default_model_dir() -> Path:
    """The bundled PTP checkpoint directory; a clear error if it has not been built."""
    if not (MODEL_DIR / "ptp_config.json").is_file():
        raise ValueError(f"the bundled model is missing at {MODEL_DIR}; pass --model DIR or build it (see README)")
    return MODEL_DIR
