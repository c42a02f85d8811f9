"""Benchmark decoding methods side by side on one model, interleaved prompt by prompt in one process.

Writes JSON (per-method MAT, tokens/s, speedups vs ar and ar-hf, time to first token, identical-output
rate vs ar, per prompt category and overall; device, versions, model hashes, the prompt file's sha256),
a Markdown table next to it and PNG plots.

--prompts reads either format, told apart by its first line:
  Spec-Bench questions {"question_id", "category", "turns": [...]}: each user turn goes through the
    tokenizer's chat template (a tokenizer without one is an error); ids are <category>/<question_id>,
    and every figure is also reported per category.
  {"id", "prompt"} (the held-out code prompts): raw text, tokenised as it is; one category, "all".
Selection, in this order: --categories, then --per-category, then --num-prompts (the first N of the rest).

llama-cpp and llama-cpp-pld (prompt lookup) run the teacher's GGUF file through llama.cpp, the CPU peer:
the same prompt ids, token limit, EOS, sampling and thread count as ptp's methods, but the GGUF's quantised
weights (the table's weights column says which). They need the optional llama-cpp-python (built from
source, minutes): pip install 'parallel-token-prediction[llama-cpp]'.

Examples:
  ptp bench --model DIR --prompts prompts.jsonl --methods ar-hf ar draft-verify pqd pld \\
            --max-new-tokens 128 --sampling greedy --sampling 0.7,50,0.95 --json runs/bench.json
  ptp bench --model DIR --prompts spec_bench_dev.jsonl --per-category 5 --turns 2 --json runs/spec.json
  ptp bench --model DIR --prompts spec_bench_dev.jsonl --categories translation qa --num-prompts 30
  ptp --threads 1 bench --prompts spec_bench_dev.jsonl --per-category 1 --methods ar llama-cpp llama-cpp-pld

When stderr is not a terminal, one progress line per prompt goes to it, e.g.
  [12/240] greedy translation/14: ar 3.10 s, pqd 2.80 s
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ptp.cli.common import add_device_arg, tokenizer_dir, torch_device
from ptp.cli.defaults import BENCH_METHODS, LLAMA_CPP_METHODS

if TYPE_CHECKING:
    from ptp.bench.prompts import BenchPrompt, ChatTemplate
    from ptp.sampling import SamplingConfig

NAME = "bench"
HELP = "benchmark decoding methods side by side (JSON + Markdown + plots)"


def parse_sampling(text: str) -> SamplingConfig:
    """'greedy' or 'T,K,P' (e.g. 0.7,50,0.95)."""
    from ptp.sampling import SamplingConfig

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
    p.add_argument("--model", default=None, help="PTP checkpoint directory (default: the bundled model)")
    p.add_argument("--prompts", default=None,
                   help="Spec-Bench questions or a JSONL of {id, prompt}, told apart by the first line "
                        "(default: the model's prompts.jsonl)")
    p.add_argument("--methods", nargs="+", default=None, choices=BENCH_METHODS, metavar="METHOD",
                   help=f"any of {', '.join(BENCH_METHODS)} (default: ar-hf ar draft-verify pqd pld; a feature-head "
                        "drafter has no pqd)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens generated per prompt and method")
    p.add_argument("--sampling", type=parse_sampling, action="append", default=None,
                   help="'greedy' or 'T,K,P'; repeatable (default: greedy and 0.7,50,0.95)")
    p.add_argument("--num-prompts", type=_positive, default=None, metavar="N",
                   help="use the first N prompts left after --categories/--per-category (default: 20 when "
                        "neither is given, else all they select)")
    p.add_argument("--per-category", type=_positive, default=None, metavar="N",
                   help="the first N prompts of each category, in file order")
    p.add_argument("--categories", nargs="+", default=None, metavar="CATEGORY",
                   help="only these categories (Spec-Bench: translation summarization qa math_reasoning rag "
                        "writing roleplay reasoning math coding extraction stem humanities)")
    p.add_argument("--turns", type=int, choices=(1, 2), default=1,
                   help="2: after a Spec-Bench question's first turn, run its second, every method from "
                        "[user 1, ar's answer (when ar does not run, the first lossless method's), user 2] "
                        "through the chat template")
    p.add_argument("--slot-budget", type=int, default=None, help="pqd/mtp u-slots per call (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="u-stream seed (the same for every method)")
    p.add_argument("--mtp-model", default=None, help="checkpoint of the independent-prediction control")
    p.add_argument("--draft-model", default=None, help="small HF causal LM for sps (same tokenizer)")
    add_device_arg(p, "the models run")
    p.add_argument("--json", default="runs/bench.json", help="output JSON; .md and plots go next to it")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def default_methods(model_dir: str) -> list[str]:
    """ar-hf, ar, the drafter's methods (pqd only for one-network drafters) and prompt lookup."""
    from ptp.checkpoint_format import peek_config

    ptp_cfg = peek_config(model_dir).get("ptp")  # a bad checkpoint is refused when loaded
    head = isinstance(ptp_cfg, dict) and ptp_cfg.get("drafter") == "head"
    return ["ar-hf", "ar", "draft-verify", *([] if head else ["pqd"]), "pld"]


def load_bench_prompts(args: argparse.Namespace, path: str,
                       tokenizer) -> tuple[tuple[BenchPrompt, ...], ChatTemplate | None, dict]:
    """(prompts, chat template or None, the record of where they came from) for the selection flags."""
    from ptp.bench.prompts import SPEC_BENCH, ChatTemplate, file_sha256, read_questions, select_questions, tokenise

    fmt, questions = read_questions(path)
    chat = ChatTemplate(tokenizer) if fmt == SPEC_BENCH else None
    if args.turns > 1 and fmt != SPEC_BENCH:
        raise ValueError(f"--turns {args.turns} needs Spec-Bench questions; {path} holds {{id, prompt}} (one turn)")
    limit = args.num_prompts
    if limit is None and args.per_category is None and args.categories is None:
        limit = 20
    selected = select_questions(questions, args.categories, args.per_category, limit)
    source = {"path": str(path), "sha256": file_sha256(path), "format": fmt, "questions_in_file": len(questions),
              "num_prompts": limit, "per_category": args.per_category, "categories": args.categories,
              "turns": args.turns}
    return tokenise(selected, tokenizer, chat), chat, source


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text
    from transformers import AutoTokenizer

    from ptp.bench.report import markdown_table, plot
    from ptp.bench.runner import BenchConfig, run_bench
    from ptp.bundled import default_model_dir
    from ptp.checkpoint_format import require_checkpoint
    from ptp.extras import require

    require("bench", "matplotlib", what="ptp bench")  # for the plots: checked before the benchmark, not after
    torch_device(args.device)  # a bad --device is a one-line error before anything loads
    wanted = [m for m in args.methods or () if m in LLAMA_CPP_METHODS]
    if wanted:
        require("llama-cpp", "llama_cpp", what=f"ptp bench --methods {wanted[0]}")
    console = Console(stderr=True, emoji=False, highlight=False)  # ids like file.py:100:name stay text
    model_dir = args.model or str(default_model_dir())
    require_checkpoint(model_dir)  # before the tokenizer search names a side issue
    prompts_path = args.prompts or str(Path(model_dir) / "prompts.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompts, chat, source = load_bench_prompts(args, prompts_path, tokenizer)
    cfg = BenchConfig(
        model_dir=model_dir,
        prompts=prompts,
        methods=tuple(args.methods or default_methods(model_dir)),
        samplings=tuple(args.sampling) if args.sampling else BenchConfig.__dataclass_fields__["samplings"].default,
        max_new_tokens=args.max_new_tokens,
        slot_budget=args.slot_budget,
        seed=args.seed,
        mtp_model_dir=args.mtp_model,
        draft_model_dir=args.draft_model,
        eos_ids=tuple(eos),
        device=args.device,
        turns=args.turns,
        prompt_source=source,
        chat=chat,
    )
    if console.is_terminal:
        with console.status(Text("benchmarking")) as status:
            record = run_bench(cfg, progress=lambda msg: status.update(Text(f"benchmarking: {msg}")))
    else:  # piped or logged: rich's status line prints nothing there, so plain lines
        record = run_bench(cfg, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    table = markdown_table(record)
    out.with_suffix(".md").write_text(table + "\n")
    plots = plot(record, out.parent / (out.stem + "-plots"))
    print(table)
    console.print(f"wrote {out}, {out.with_suffix('.md')}, " + ", ".join(str(p) for p in plots), markup=False)
    return 0
