"""Benchmark decoding methods side by side on one model, interleaved prompt by prompt in one process.

Writes JSON (per-method MAT, tokens/s, speedups vs ar and ar-hf, time to first token, identical-output
rate vs ar, device, versions, model hashes), a Markdown table next to it and PNG plots.

Example:
  ptp bench --model DIR --prompts prompts.jsonl --methods ar-hf ar draft-verify pqd pld \\
            --max-new-tokens 128 --sampling greedy --sampling 0.7,50,0.95 --json runs/bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ptp.cli.common import tokenizer_dir
from ptp.sampling import SamplingConfig

NAME = "bench"
HELP = "benchmark decoding methods side by side (JSON + Markdown + plots)"


def parse_sampling(text: str) -> SamplingConfig:
    """'greedy' or 'T,K,P' (e.g. 0.7,50,0.95)."""
    if text == "greedy":
        return SamplingConfig(temperature=0)
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--sampling takes 'greedy' or 'T,K,P' (e.g. 0.7,50,0.95), got {text!r}")
    try:
        return SamplingConfig(temperature=float(parts[0]), top_k=int(parts[1]), top_p=float(parts[2]))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ptp.bench.runner import ALL_METHODS

    p.add_argument("--model", default=None, help="PTP checkpoint directory (default: the bundled model)")
    p.add_argument("--prompts", default=None, help="JSONL with {id, prompt} (default: the bundled prompts)")
    p.add_argument("--methods", nargs="+", default=["ar-hf", "ar", "draft-verify", "pqd", "pld"],
                   choices=ALL_METHODS, metavar="METHOD", help=f"any of {', '.join(ALL_METHODS)}")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens generated per prompt and method")
    p.add_argument("--sampling", type=parse_sampling, action="append", default=None,
                   help="'greedy' or 'T,K,P'; repeatable (default: greedy and 0.7,50,0.95)")
    p.add_argument("--num-prompts", type=int, default=20, help="use the first N prompts")
    p.add_argument("--slot-budget", type=int, default=None, help="pqd/mtp u-slots per call (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="u-stream seed (the same for every method)")
    p.add_argument("--mtp-model", default=None, help="checkpoint of the independent-prediction control")
    p.add_argument("--draft-model", default=None, help="small HF causal LM for sps (same tokenizer)")
    p.add_argument("--device", default="cpu", help="where the models run: cpu or cuda[:N]")
    p.add_argument("--json", default="runs/bench.json", help="output JSON; .md and plots go next to it")


def load_prompts(path: str, tokenizer, limit: int) -> tuple[tuple[str, list[int]], ...]:
    """(id, token ids) pairs of the first ``limit`` prompts of a JSONL file of {id, prompt}."""
    from ptp.data.prompts import read_prompts

    return tuple((p.id, tokenizer(p.prompt).input_ids) for p in read_prompts(path)[:limit])


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from transformers import AutoTokenizer

    from ptp.bench.report import markdown_table, plot
    from ptp.bench.runner import BenchConfig, run_bench
    from ptp.bundled import default_model_dir

    console = Console(stderr=True)
    model_dir = args.model or str(default_model_dir())
    prompts_path = args.prompts or str(Path(model_dir) / "prompts.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    cfg = BenchConfig(
        model_dir=model_dir,
        prompts=load_prompts(prompts_path, tokenizer, args.num_prompts),
        methods=tuple(args.methods),
        samplings=tuple(args.sampling) if args.sampling else BenchConfig.__dataclass_fields__["samplings"].default,
        max_new_tokens=args.max_new_tokens,
        slot_budget=args.slot_budget,
        seed=args.seed,
        mtp_model_dir=args.mtp_model,
        draft_model_dir=args.draft_model,
        eos_ids=tuple(eos),
        device=args.device,
    )
    with console.status("benchmarking") as status:
        record = run_bench(cfg, progress=lambda msg: status.update(f"benchmarking: {msg}"))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    table = markdown_table(record)
    out.with_suffix(".md").write_text(table + "\n")
    plots = plot(record, out.parent / (out.stem + "-plots"))
    print(table)
    console.print(f"wrote {out}, {out.with_suffix('.md')}, " + ", ".join(str(p) for p in plots))
    return 0
