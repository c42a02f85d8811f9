"""Measure the fastest PQD slot budget (or feature-head draft length) on this machine; --write stores it.

Prints the cost of a teacher call per number of rows, then runs the model's method at each
candidate on a few held-out prompts and reports tokens/s and MAT per candidate. With --batch-sizes
it does so per batch size (prompts decoded together, "no drafting" among the candidates): rows
share each call, so the budget that pays at one request rarely pays in a full batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptp.cli.common import add_device_arg, add_sampling_args, sampling_from_args, tokenizer_dir, torch_device
from ptp.cli.defaults import TUNE_CANDIDATES

NAME = "tune"
HELP = "measure the fastest PQD slot budget for this machine"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="PTP checkpoint directory (default: the bundled model)")
    p.add_argument("--prompts", default=None, help="JSONL of {id, prompt} (default: the model's prompts.jsonl)")
    p.add_argument("--num-prompts", type=int, default=4, help="held-out prompts timed per budget")
    p.add_argument("--budgets", type=int, nargs="+", default=None,
                   help=f"slot budgets to try (default: {' '.join(map(str, TUNE_CANDIDATES))}; a feature "
                        "head: draft lengths 1..window)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, metavar="B",
                   help="tune per batch size instead: B prompts decoded together, budget 0 (no drafting) "
                        "among the candidates; --write stores the (B, best) pairs as batch_budgets, which "
                        "ptp serve and batched generate use (e.g. --batch-sizes 1 4 16)")
    add_device_arg(p)
    p.add_argument("--write", action="store_true",
                   help="store the best budget in the checkpoint's ptp_config.json (needs --model)")
    add_sampling_args(p)


def run(args: argparse.Namespace) -> int:
    from ptp.bundled import MODEL_DIR

    if args.write and not args.model:  # before any measurement: never edit the installed package
        raise ValueError(f"--write needs --model DIR: it does not edit the shipped drafter in {MODEL_DIR}; "
                         "copy that directory and pass the copy as --model")

    device = torch_device(args.device)
    from transformers import AutoTokenizer

    import ptp
    from ptp.bench.prompts import first_prompt_ids
    from ptp.bench.tune import DEFAULT_CANDIDATES, forward_cost, tune_slot_budget
    from ptp.bundled import default_model_dir
    from ptp.checkpoint_format import CONFIG_NAME, update_config

    model_dir = Path(args.model) if args.model else default_model_dir()
    model = ptp.PTPModel.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))
    prompts = first_prompt_ids(args.prompts or str(model_dir / "prompts.jsonl"), tokenizer, args.num_prompts)
    sampling = sampling_from_args(args, model.cfg.sampling)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else None
    costs = forward_cost(model)
    print("cost of one call over q query tokens (cache of 256): "
          + ", ".join(f"q={q}: {s * 1000:.1f} ms ({s / costs[1]:.2f}x)" for q, s in costs.items()), flush=True)
    candidates = args.budgets or (list(range(1, model.cfg.window + 1)) if model.is_head else DEFAULT_CANDIDATES)
    knob = "draft_len" if model.is_head else "slot_budget"
    if args.batch_sizes:
        if any(b < 1 for b in args.batch_sizes):
            raise ValueError(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
        candidates = sorted({0, *candidates})
        prompts = first_prompt_ids(args.prompts or str(model_dir / "prompts.jsonl"), tokenizer,
                                   max(args.num_prompts, *args.batch_sizes))
        rows = [ids for _, ids in prompts]
        rows = (rows * (1 + max(args.batch_sizes) // len(rows)))[: max(args.num_prompts, *args.batch_sizes)]
        pairs = []
        for batch in sorted(set(args.batch_sizes)):  # prompts repeat (with other seeds) if there are too few
            best, trials = tune_slot_budget(model, rows, sampling, candidates,
                                            args.max_new_tokens, eos_ids=eos, batch=batch, progress=_progress)
            _print_trials(f"batch of {batch}", model.is_head, trials, best)
            pairs.append((batch, best))
        if args.write:
            update_config(model_dir, batch_budgets=pairs)
            print(f"wrote batch_budgets={pairs} to {model_dir / CONFIG_NAME}", flush=True)
        return 0
    best, trials = tune_slot_budget(model, [ids for _, ids in prompts], sampling, candidates,
                                    args.max_new_tokens, eos_ids=eos, progress=_progress)
    _print_trials("one request", model.is_head, trials, best)
    if args.write:
        update_config(model_dir, **{knob: best})
        print(f"wrote {knob}={best} to {model_dir / CONFIG_NAME}", flush=True)
    return 0


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _print_trials(title: str, is_head: bool, trials, best: int) -> None:
    print(f"{title}:", flush=True)
    print(f"{'drafts' if is_head else 'budget':>6} {'tok/s':>8} {'MAT':>6}", flush=True)
    for t in trials:
        mark = "  <- best" if t.budget == best else ""
        print(f"{t.budget:>6} {t.tokens_per_second:>8.1f} {t.mat:>6.2f}{mark}", flush=True)
