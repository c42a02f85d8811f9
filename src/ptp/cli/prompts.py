"""Benchmark prompts from held-out code: signature + docstring as the prompt, the body as the reference.

Reads the test split of a `ptp corpus` directory and writes JSONL {"id", "prompt", "reference"},
a deterministic sample sorted by id.
"""

from __future__ import annotations

import argparse

from ptp.cli.defaults import PROMPTS

NAME = "prompts"
HELP = "build held-out benchmark prompts from the corpus test split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default="data/corpus", help="`ptp corpus` output directory")
    p.add_argument("--split", default="test", choices=["test", "val"], help="held-out split to draw from")
    p.add_argument("--out", default="data/prompts/test.jsonl", help="output JSONL")
    p.add_argument("--max-prompts", type=int, default=PROMPTS.max_prompts, help="cap on prompts written")
    p.add_argument("--min-body-chars", type=int, default=PROMPTS.min_body_chars, help="skip shorter bodies")
    p.add_argument("--max-body-chars", type=int, default=PROMPTS.max_body_chars, help="skip longer bodies")
    p.add_argument("--max-prompt-chars", type=int, default=PROMPTS.max_prompt_chars,
                   help="skip longer signature + docstring")


def run(args: argparse.Namespace) -> int:
    from ptp.data.prompts import PromptConfig, build_prompts

    cfg = PromptConfig(max_prompts=args.max_prompts, min_body_chars=args.min_body_chars,
                       max_body_chars=args.max_body_chars, max_prompt_chars=args.max_prompt_chars)
    count = build_prompts(args.corpus, cfg, args.out, split=args.split)
    print(f"{count} prompts written to {args.out}")
    return 0
