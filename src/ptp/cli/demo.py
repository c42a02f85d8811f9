"""Show PTP on the bundled model: PQD output with each call's tokens grouped, then AR with the same seed.

Picks a held-out prompt (a function signature + docstring from code the model never trained on),
generates with Partial Quadratic Decoding, prints the text with alternating colours per model call
(a mark after each call where there are no colours), then decodes autoregressively with the same
seed and compares times, speedup, MAT and outputs.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from ptp.cli.common import add_sampling_args, sampling_from_args, tokenizer_dir

NAME = "demo"
HELP = "see PTP work on the bundled model (PQD vs autoregressive, same seed)"
COLOURS = ("bold cyan", "bold magenta")
CALL_MARK = "\u2502"  # drawn after each call's tokens when the terminal shows no colours
WARMUP_TOKENS = 8
MAX_TRIES = 8  # random prompts tried before showing one the model ends early anyway


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="PTP checkpoint directory (default: the bundled model)")
    p.add_argument("--prompts", default=None, help="JSONL of {id, prompt} (default: the model's prompts.jsonl)")
    p.add_argument("--prompt-id", default=None, help="which prompt (default: a random one, chosen by --seed)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate")
    p.add_argument("--seed", type=int, default=None, help="u-stream seed (default: random)")
    p.add_argument("--slot-budget", type=int, default=None, help="pqd u-slots per call (default: the model's)")
    add_sampling_args(p)


def _candidate_prompts(path: Path, prompt_id: str | None, rng: random.Random) -> list:
    """The asked-for prompt, or every prompt in a random order (the demo takes the first that the
    model does not end at once)."""
    from ptp.data.prompts import read_prompts

    items = read_prompts(path)
    if prompt_id is None:
        return rng.sample(items, len(items))
    for item in items:
        if item.id == prompt_id:
            return [item]
    raise ValueError(f"no prompt with id {prompt_id!r} in {path}")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text
    from transformers import AutoTokenizer

    import ptp
    from ptp.bundled import default_model_dir

    console = Console(highlight=False)
    model_dir = Path(args.model) if args.model else default_model_dir()
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    candidates = _candidate_prompts(Path(args.prompts) if args.prompts else model_dir / "prompts.jsonl",
                                    args.prompt_id, random.Random(seed))
    with console.status("loading the model"):
        model = ptp.PTPModel.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))
    sampling = sampling_from_args(args, model.cfg.sampling)
    options = dict(slot_budget=args.slot_budget, eos_token_id=tokenizer.eos_token_id)
    for item in candidates[:MAX_TRIES]:
        ids = tokenizer(item.prompt).input_ids
        # Warm-up (first-call overheads); a prompt the model ends within it makes a dull demo.
        if len(ptp.generate(model, ids, WARMUP_TOKENS, sampling, seed, "pqd", **options).tokens) == WARMUP_TOKENS:
            break

    console.rule(f"[bold]prompt {item.id}[/] (held out), seed {seed}, {_describe(sampling)}")
    console.print(Text(item.prompt, style="dim"), end="")
    plain = console.color_system is None  # no colours (e.g. piped): mark each call's end instead
    pqd_tokens, calls, showing = [], 0, 0.0
    start = time.perf_counter()
    for chunk in ptp.generate_stream(model, ids, args.max_new_tokens, sampling, seed, "pqd", **options):
        if chunk.tokens:
            shown = time.perf_counter()
            text = tokenizer.decode(chunk.tokens) + (CALL_MARK if plain else "")
            console.print(Text(text, style=COLOURS[calls % 2]), end="")
            calls += 1
            pqd_tokens += chunk.tokens
            showing += time.perf_counter() - shown
    pqd_seconds = time.perf_counter() - start - showing  # decoding only, like the AR time below
    console.print()
    console.rule()
    start = time.perf_counter()
    ar = ptp.generate(model, ids, args.max_new_tokens, sampling, seed, "ar", eos_token_id=tokenizer.eos_token_id)
    ar_seconds = time.perf_counter() - start
    same = ar.tokens.tolist() == pqd_tokens
    grouping = f"each call ends at {CALL_MARK}" if plain else "colours alternate per call"
    console.print(f"PQD: {len(pqd_tokens)} tokens in {calls} calls ({pqd_seconds:.2f} s), "
                  f"MAT {len(pqd_tokens) / max(calls, 1):.2f} tokens per call; {grouping}")
    console.print(f"AR : {len(ar.tokens)} tokens in {ar.teacher_calls} calls ({ar_seconds:.2f} s)")
    console.print(f"speedup {ar_seconds / pqd_seconds:.2f}x; outputs identical: "
                  + ("[bold green]yes[/]" if same else "[bold red]NO[/]"))
    return 0 if same else 1


def _describe(s) -> str:
    return "greedy" if s.greedy else f"T={s.temperature:g}, top-k {s.top_k}, top-p {s.top_p:g}"
