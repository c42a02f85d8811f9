"""Distil a PTP drafter from its teacher (o-ptp, c-ptp, mtp control, inverse-ar) on token shards.

Configuration is a YAML file of sections (model, data, sampling, packing, distill, optim, train);
every key can be overridden with ``--set section.key=value`` or a bare ``section.key=value``.
Example: ``ptp train --config configs/distill-o-ptp.yaml train.max_steps=200 --set optim.lr=3e-4``.
Multi-process: ``accelerate launch --num_processes 2 --multi_gpu -m ptp.cli train --config ...`` (the
torchrun launcher; on a machine without CUDA it runs CPU processes over gloo, while ``--cpu`` would
start one process). ``train.sharding=fsdp`` shards the weights over the processes.
"""

from __future__ import annotations

import argparse
import json

from ptp.cli.train_config import add_config_arguments, as_yaml, config_sections, make_callbacks, read_config

NAME = "train"
HELP = "distil a PTP drafter (o-ptp / c-ptp / mtp / inverse-ar)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)


def _schema() -> dict:
    from ptp.sampling import SamplingConfig
    from ptp.training import DataConfig, DistillConfig, DrafterConfig, OptimConfig, PackingConfig, TrainConfig

    return {"model": DrafterConfig, "data": DataConfig, "sampling": SamplingConfig, "packing": PackingConfig,
            "distill": DistillConfig, "optim": OptimConfig, "train": TrainConfig}


def run(args: argparse.Namespace) -> int:
    from ptp.training import build_distill_task, train

    data = read_config(args)
    sampling_given = data.get("sampling") is not None
    sections = config_sections(data, _schema())
    if args.print_config:
        print(as_yaml(sections))
        return 0
    task = build_distill_task(sections["model"], sections["data"], sections["packing"], sections["distill"],
                              sections["sampling"] if sampling_given else None)
    result = train(task, sections["train"], sections["optim"], make_callbacks(f"train {task.cfg.objective}"))
    if not result.is_main:
        return 0
    summary = {**result.summary(), "best_mean_correct": result.best_score, "run_dir": str(result.run_dir),
               "best": str(result.run_dir / "best")}
    print(json.dumps(summary, indent=1))
    return 0
