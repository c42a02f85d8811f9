"""Training checkpoints: safetensors + JSON only, written atomically, last and best kept.

Layout of a run directory::

    run/
      checkpoint-000200/          a complete checkpoint (never renamed into place half-written)
        <model files>             whatever the task's save_model writes (loadable on its own)
        trainer/state.json        step, data position, best score, configs, ...
        trainer/optimizer.safetensors   optimizer tensors (the non-tensor part lives in state.json)
        trainer/rng.safetensors   torch RNG states
      last -> checkpoint-000200   symlinks, each replaced atomically
      best -> checkpoint-000100
      metrics.csv, eval.csv

A checkpoint is written to ``checkpoint-XXXXXX.tmp``, every file fsynced, then renamed; a run killed
at any moment leaves at most a ``.tmp`` directory, which ``latest_checkpoint`` ignores and
``cleanup`` removes. Checkpoints that are neither last nor best are deleted after each save.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TRAINER_DIR = "trainer"
STATE_NAME = "state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
RNG_NAME = "rng.safetensors"
LAST, BEST = "last", "best"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TMP_SUFFIX = ".tmp"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict -> (tensors, JSON-able rest); no pickle needed to store it."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of ``flatten_optimizer``."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for directory in [*sorted(p for p in root.rglob("*") if p.is_dir()), root]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _point(run_dir: Path, link: str, target: str) -> None:
    """Atomically make run_dir/link a symlink to target (a sibling name)."""
    tmp = run_dir / f".{link}{TMP_SUFFIX}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, run_dir / link)


def save_checkpoint(run_dir: Path, step: int, write_model: Callable[[Path], None], state: dict,
                    optimizer_state: dict, is_best: bool) -> Path:
    """Write a complete checkpoint for ``step`` atomically; update last (and best); prune the rest."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    if final.is_dir():  # this step is already saved (e.g. a periodic save that is also the last step)
        _point(run_dir, LAST, final.name)
        if is_best:
            _point(run_dir, BEST, final.name)
        return final
    tmp = run_dir / (final.name + TMP_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    trainer = tmp / TRAINER_DIR
    trainer.mkdir(parents=True)
    tensors, meta = flatten_optimizer(optimizer_state)
    save_file(tensors, str(trainer / OPTIMIZER_NAME))
    save_file(rng_tensors(), str(trainer / RNG_NAME))
    (trainer / STATE_NAME).write_text(json.dumps({**state, "optimizer": meta}, indent=1) + "\n")
    write_model(tmp)
    _fsync_tree(tmp)
    os.replace(tmp, final)
    _point(run_dir, LAST, final.name)
    if is_best:
        _point(run_dir, BEST, final.name)
    prune(run_dir)
    return final


def prune(run_dir: Path) -> None:
    """Delete checkpoints that are neither last nor best, and leftover temporary directories."""
    keep = {os.readlink(run_dir / n) for n in (LAST, BEST) if (run_dir / n).is_symlink()}
    for path in run_dir.iterdir():
        if path.is_symlink() or not path.is_dir():
            continue
        stale = CHECKPOINT_RE.match(path.name) and path.name not in keep
        if stale or path.name.endswith(TMP_SUFFIX):
            shutil.rmtree(path)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (the ``last`` link, else the highest step), or None."""
    if not run_dir.is_dir():
        return None
    link = run_dir / LAST
    if link.is_symlink() and link.resolve().is_dir():
        return link.resolve()
    steps = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name)))
    return steps[-1][1] if steps else None


def load_trainer_state(checkpoint: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(state, optimizer state_dict, rng tensors) of a checkpoint."""
    trainer = checkpoint / TRAINER_DIR
    try:
        state = json.loads((trainer / STATE_NAME).read_text())
        optimizer = unflatten_optimizer(load_file(str(trainer / OPTIMIZER_NAME)), state.pop("optimizer"))
        rng = load_file(str(trainer / RNG_NAME))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{checkpoint} is not a complete training checkpoint: {err}") from None
    return state, optimizer, rng
