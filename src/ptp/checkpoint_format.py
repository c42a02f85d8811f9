"""The saved PTPModel format: the one module that reads, writes and updates a checkpoint's files.

A checkpoint directory holds::

    ptp_config.json       format_version, "ptp" (a PTPConfig as a dict), teacher_fingerprint, teacher_source
    adapter.safetensors   the drafter's weights (gated LoRA + u-embedding, or the feature head)
    teacher/              the teacher itself (optional; otherwise teacher_source names it)
    tokenizer files, prompts.jsonl   (optional)

``PTPModel.save_pretrained`` / ``from_pretrained`` and every command that reads or edits a checkpoint
(training's validation histogram, ``ptp tune --write``, ``ptp bench``) go through these functions.
Nothing here imports torch until a weight is hashed or read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ptp.teachers import TEACHERS, is_teacher_reference, resolve_teacher

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

CONFIG_NAME = "ptp_config.json"
WEIGHTS_NAME = "adapter.safetensors"
TEACHER_SUBDIR = "teacher"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
HASH_SAMPLES = 4096  # values sampled (evenly strided) from each weight tensor for the hash


# -- ptp_config.json ------------------------------------------------------------------------------
def is_checkpoint(directory: str | os.PathLike) -> bool:
    """True if ``directory`` has a ptp_config.json (whether it is valid is checked when it is read)."""
    return (Path(directory) / CONFIG_NAME).is_file()


def require_checkpoint(directory: str | os.PathLike) -> None:
    """Raise ValueError unless ``directory`` has a ptp_config.json."""
    if not is_checkpoint(directory):
        raise ValueError(f"{directory} is not a ptp checkpoint: {CONFIG_NAME} is missing")


def write_config(directory: str | os.PathLike, ptp: dict, teacher_fingerprint: dict,
                 teacher_source: str | None) -> None:
    """Write ptp_config.json (``ptp`` is ``PTPConfig.to_dict()``)."""
    meta = {"format_version": FORMAT_VERSION, "ptp": ptp, "teacher_fingerprint": teacher_fingerprint,
            "teacher_source": teacher_source}
    _write_json(Path(directory) / CONFIG_NAME, meta)


def read_config(directory: str | os.PathLike) -> dict:
    """ptp_config.json of a checkpoint, checked: JSON, the format version and the required entries."""
    src = Path(directory)
    path = src / CONFIG_NAME
    if not path.is_file():
        pickles = [p.name for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES] if src.is_dir() else []
        hint = f" (found {pickles}; ptp never unpickles checkpoints)" if pickles else ""
        raise ValueError(f"{src} is not a ptp checkpoint: {CONFIG_NAME} is missing{hint}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported or missing format_version (expected {FORMAT_VERSION})")
    for key in ("ptp", "teacher_fingerprint"):
        if key not in meta:
            raise ValueError(f"{path} lacks the {key!r} entry")
    return meta


def peek_config(directory: str | os.PathLike) -> dict:
    """ptp_config.json as far as it can be read, {} otherwise (for defaults; loading checks it properly)."""
    try:
        meta = json.loads((Path(directory) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def update_config(directory: str | os.PathLike, **changes) -> dict:
    """Set fields of a checkpoint's PTPConfig (e.g. ``slot_budget=8``), validated, and rewrite the file.

    Returns the new ``ptp`` entry. An unknown field or a value PTPConfig refuses raises ValueError and
    leaves the file as it was.
    """
    from ptp.model import PTPConfig

    path = Path(directory) / CONFIG_NAME
    meta = read_config(directory)
    unknown = sorted(set(changes) - set(meta["ptp"]) - set(PTPConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path}: PTPConfig has no field {unknown}")
    meta["ptp"] = PTPConfig.from_dict({**meta["ptp"], **changes}).to_dict()
    _write_json(path, meta)
    return meta["ptp"]


def _write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# -- adapter.safetensors --------------------------------------------------------------------------
def write_weights(directory: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Write the drafter's weights (contiguous CPU tensors) as adapter.safetensors."""
    from safetensors.torch import save_file

    save_file(tensors, str(Path(directory) / WEIGHTS_NAME), metadata={"format": "pt"})


def read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The drafter's weights; ValueError if the file is missing, corrupt or truncated."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ValueError(f"{directory} is not a ptp checkpoint: {WEIGHTS_NAME} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"{path} is corrupt or truncated: {err}") from None


# -- the teacher: fingerprint and where it (and its tokenizer) is -----------------------------------
def weight_hash(model: torch.nn.Module) -> str:
    """SHA-256 over names, shapes and a strided sample of every parameter, rounded to bfloat16.

    Rounding to bfloat16 makes the hash agree whether the teacher was loaded in float32, bfloat16
    or float16, while any retrained or different model changes it.
    """
    import torch

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


def check_teacher(directory: str | os.PathLike, meta: dict, teacher: PreTrainedModel) -> None:
    """Raise ValueError unless ``teacher`` matches the fingerprint ``meta`` (a read_config) records."""
    problem = mismatch_message(meta["teacher_fingerprint"], fingerprint(teacher))
    if problem:
        raise ValueError(f"{directory} was trained for a different teacher: {problem}")


def recorded_teacher(checkpoint: str | os.PathLike) -> str | Path | None:
    """The teacher a checkpoint's ptp_config.json records (a relative path made relative to the checkpoint)."""
    source = peek_config(checkpoint).get("teacher_source")
    if not isinstance(source, str) or not source or source in TEACHERS:
        return source or None
    path = Path(source)
    return path if path.is_absolute() else Path(checkpoint) / path


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def tokenizer_dir(model_dir: str | os.PathLike) -> str:
    """The tokenizer folder for a checkpoint, a teacher folder, a registry name or a .gguf file.

    Looks next to the checkpoint, then in its teacher/ and tokenizer/ folders, then at the teacher
    its ptp_config.json records (``teacher_source``; a relative path is relative to the checkpoint).
    """
    if is_teacher_reference(model_dir):
        return teacher_tokenizer_dir(model_dir)
    root = Path(model_dir)
    for candidate in (root, root / TEACHER_SUBDIR, root / "tokenizer"):
        if _has_tokenizer(candidate):
            return str(candidate)
    recorded = recorded_teacher(root)
    if recorded is not None:
        try:
            return teacher_tokenizer_dir(recorded)
        except ValueError as err:
            raise ValueError(f"no tokenizer found in {root}, nor at its recorded teacher: {err}") from err
    raise ValueError(f"no tokenizer found in {root} (looked for tokenizer.json in it, teacher/, tokenizer/)")


def teacher_tokenizer_dir(source: str | os.PathLike) -> str:
    """The tokenizer folder of a teacher source (registry name, .gguf file or local folder), converting once."""
    folder = Path(resolve_teacher(source))
    if not _has_tokenizer(folder):
        raise ValueError(f"no tokenizer found in teacher {source} (looked for tokenizer.json in {folder})")
    return str(folder)
