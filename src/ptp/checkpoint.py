"""Teacher fingerprints: what a checkpoint records about the teacher it was trained for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ptp.teachers import TEACHERS, is_teacher_reference, resolve_teacher

PTP_CONFIG_NAME = "ptp_config.json"  # a saved PTPModel's metadata (ptp.model.CONFIG_NAME)
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


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def tokenizer_dir(model_dir: str | Path) -> str:
    """The tokenizer folder for a checkpoint, a teacher folder, a registry name or a .gguf file.

    Looks next to the checkpoint, then in its teacher/ and tokenizer/ folders, then at the teacher
    its ptp_config.json records (``teacher_source``; a relative path is relative to the checkpoint).
    """
    if is_teacher_reference(model_dir):
        return teacher_tokenizer_dir(model_dir)
    root = Path(model_dir)
    for candidate in (root, root / "teacher", root / "tokenizer"):
        if _has_tokenizer(candidate):
            return str(candidate)
    recorded = recorded_teacher(root)
    if recorded is not None:
        try:
            return teacher_tokenizer_dir(recorded)
        except ValueError as err:
            raise ValueError(f"no tokenizer found in {root}, nor at its recorded teacher: {err}") from err
    raise ValueError(f"no tokenizer found in {root} (looked for tokenizer.json in it, teacher/, tokenizer/)")


def recorded_teacher(checkpoint: str | Path) -> str | Path | None:
    """The teacher a checkpoint's ptp_config.json records (a relative path made relative to the checkpoint)."""
    try:
        source = json.loads((Path(checkpoint) / PTP_CONFIG_NAME).read_text()).get("teacher_source")
    except (OSError, ValueError, AttributeError):
        return None
    if not source or source in TEACHERS:
        return source or None
    path = Path(source)
    return path if path.is_absolute() else Path(checkpoint) / path


def teacher_tokenizer_dir(source: str | Path) -> str:
    """The tokenizer folder of a teacher source (registry name, .gguf file or local folder), converting once."""
    folder = Path(resolve_teacher(source))
    if not _has_tokenizer(folder):
        raise ValueError(f"no tokenizer found in teacher {source} (looked for tokenizer.json in {folder})")
    return str(folder)
