"""Teacher fingerprints: what a checkpoint records about the teacher it was trained for."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from transformers import PreTrainedModel

HASH_SAMPLES = 4096  # values sampled (evenly strided) from each weight tensor for the hash


def weight_hash(model: torch.nn.Module) -> str:
    """SHA-256 over names, shapes and a strided sample of every parameter, rounded to bfloat16.

    Rounding to bfloat16 makes the hash agree whether the teacher was loaded in float32, bfloat16
    or float16, while any retrained or different model changes it.
    """
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // HASH_SAMPLES)
        sample = flat[::step][:HASH_SAMPLES].to("cpu", torch.bfloat16).view(torch.int16)
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def fingerprint(model: PreTrainedModel) -> dict:
    """Architecture, vocabulary size, hidden size and weight hash of a teacher."""
    cfg = model.config
    return {
        "architecture": type(model).__name__,
        "vocab_size": int(cfg.vocab_size),
        "hidden_size": int(cfg.hidden_size),
        "num_layers": int(cfg.num_hidden_layers),
        "weight_hash": weight_hash(model),
    }


def mismatch_message(recorded: dict, actual: dict) -> str | None:
    """None if the fingerprints agree, otherwise which fields differ."""
    diffs = [
        f"{k}: recorded {recorded.get(k)!r}, got {actual.get(k)!r}" for k in actual if recorded.get(k) != actual[k]
    ]
    return "; ".join(diffs) or None


def tokenizer_dir(model_dir: str | Path) -> str:
    """Tokenizer files sit next to a checkpoint, or in its teacher/ or tokenizer/ folder."""
    root = Path(model_dir)
    for candidate in (root, root / "teacher", root / "tokenizer"):
        if (candidate / "tokenizer.json").is_file() or (candidate / "tokenizer_config.json").is_file():
            return str(candidate)
    raise ValueError(f"no tokenizer found in {root} (looked for tokenizer.json in it, teacher/, tokenizer/)")
