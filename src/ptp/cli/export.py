"""Package a trained drafter with its teacher, tokenizer and prompts into one self-contained directory.

The result loads with ``PTPModel.from_pretrained(OUT)`` anywhere (the teacher travels in OUT/teacher)
and is what ``ptp demo``, ``ptp bench`` and ``ptp serve`` take as ``--model``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "export"
HELP = "bundle a drafter checkpoint with its teacher, tokenizer and prompts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a ptp train checkpoint (e.g. runs/o-ptp/best)")
    p.add_argument("--out", required=True, help="output directory (created; must not exist)")
    p.add_argument("--teacher", default=None, help="teacher directory (default: the one the checkpoint records)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the teacher's, else the checkpoint's)")
    p.add_argument("--prompts", default=None, help="prompt JSONL to ship as OUT/prompts.jsonl (e.g. held-out)")
    p.add_argument("--num-prompts", type=int, default=64, help="how many prompts to ship")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    import ptp
    from ptp.data.prompts import read_prompts

    out = Path(args.out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new directory")
    model = ptp.PTPModel.from_pretrained(args.checkpoint, teacher=args.teacher)
    tokenizer = AutoTokenizer.from_pretrained(_find_tokenizer(args, model))
    model.save_pretrained(out, include_teacher=True)
    tokenizer.save_pretrained(out)
    if args.prompts:
        prompts = read_prompts(args.prompts)[: args.num_prompts]
        (out / "prompts.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in prompts))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB): adapter, teacher/, tokenizer" + (", prompts.jsonl" if args.prompts else ""))
    return 0


def _find_tokenizer(args: argparse.Namespace, model) -> str:
    from ptp.checkpoint_format import tokenizer_dir

    for candidate in (args.tokenizer, args.teacher or model.teacher.config._name_or_path, args.checkpoint):
        if candidate:
            try:
                return tokenizer_dir(candidate)
            except ValueError:
                continue
    raise ValueError("no tokenizer found next to the teacher or the checkpoint: pass --tokenizer DIR")
