"""Train a plain Llama teacher from scratch (next-token loss) on document shards.

Sections: teacher (architecture; ``teacher.preset`` picks a named size, other keys override it), data,
packing, optim, train. Keeps the best checkpoint by held-out loss (``train.patience`` stops early) and
exports it to ``<out_dir>/model``: a standard ``save_pretrained`` directory with the tokenizer copied in.
Example: ``ptp --threads 1 pretrain --config configs/pretrain-small.yaml train.max_minutes=5``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

from ptp.cli.train_config import add_config_arguments, as_yaml, config_sections, make_callbacks, read_config

NAME = "pretrain"
HELP = "train a Llama teacher from scratch on document shards"
EXPORT_DIR = "model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)


def _schema() -> dict:
    from ptp.training import DataConfig, OptimConfig, PackingConfig, TeacherConfig, TrainConfig

    return {"teacher": TeacherConfig, "data": DataConfig, "packing": PackingConfig, "optim": OptimConfig,
            "train": TrainConfig}


def _teacher_section(data: dict) -> dict:
    """Expand ``teacher.preset`` into its keys (explicit keys win)."""
    from ptp.training import PRESETS

    section = dict(data.get("teacher") or {})
    preset = section.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown teacher.preset {preset!r}; choose one of {sorted(PRESETS)}")
        section = {**dataclasses.asdict(PRESETS[preset]), **section}
    return {**data, "teacher": section}


def _tokenizer_dir(data_cfg, manifest: dict) -> Path:
    name = data_cfg.tokenizer or manifest.get("tokenizer")
    if not name or not Path(name).is_dir():
        raise ValueError(f"need a tokenizer directory: set data.tokenizer (the shard manifest says {name!r})")
    return Path(name)


def export_model(checkpoint: Path, target: Path) -> None:
    """Copy a checkpoint's model and tokenizer files (not the trainer state) to ``target``, atomically."""
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns("trainer"))
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from ptp.data.shards import read_manifest
    from ptp.training import build_pretrain_task, train

    sections = config_sections(_teacher_section(read_config(args)), _schema())
    if args.print_config:
        print(as_yaml(sections))
        return 0
    data_cfg, packing = sections["data"], sections["packing"]
    if packing.seq_len > sections["teacher"].max_positions:
        raise ValueError(f"packing.seq_len {packing.seq_len} exceeds teacher.max_positions "
                         f"{sections['teacher'].max_positions}")
    tok_dir = _tokenizer_dir(data_cfg, read_manifest(data_cfg.train))
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    task = build_pretrain_task(sections["teacher"], data_cfg, packing, tokenizer, tok_dir, packing.seed)
    result = train(task, sections["train"], sections["optim"], make_callbacks("pretrain"))
    if not result.is_main:
        return 0
    best = (result.run_dir / "best").resolve()
    export_model(best, result.run_dir / EXPORT_DIR)
    summary = {**result.summary(), "best_val_loss": -result.best_score, "model": str(result.run_dir / EXPORT_DIR)}
    print(json.dumps(summary, indent=1))
    return 0
