"""Show PTP on the default model: the drafter's output with each teacher call's tokens grouped, then
autoregressive decoding with the same seed, both times, the speedup, MAT and whether they are identical.

The default model is SmolLM2-135M-Instruct (installed from PyPI, converted once into ~/.cache/ptp)
with the feature-head drafter shipped in ptp. The prompt is a chat instruction from the model's
prompts.jsonl (none of them from a benchmark), sent through the chat template.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from ptp.cli.common import add_sampling_args, prompt_ids, sampling_from_args, tokenizer_dir

NAME = "demo"
HELP = "see PTP work on the default model (drafter vs autoregressive, same seed)"
COLOURS = ("bold cyan", "bold magenta")
WARMUP_TOKENS = 8
MAX_TRIES = 8  # prompts (each with a fresh seed) tried before showing one the model ends early anyway


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="PTP checkpoint directory (default: the shipped SmolLM2 drafter)")
    p.add_argument("--prompts", default=None, help="JSONL of {id, prompt} (default: the model's prompts.jsonl)")
    p.add_argument("--prompt-id", default=None, help="which prompt (default: a random one, chosen by --seed)")
    p.add_argument("--prompt", default=None, help="your own prompt text (instead of the prompt file)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate")
    p.add_argument("--seed", type=int, default=None, help="u-stream seed (default: random)")
    p.add_argument("--method", default=None, choices=("draft-verify", "pqd"),
                   help="the PTP method shown (default: the model's fastest)")
    p.add_argument("--slot-budget", type=int, default=None, help="pqd u-slots per call (default: the model's)")
    add_sampling_args(p)


def _candidates(args: argparse.Namespace, model_dir: Path, rng: random.Random) -> list:
    """The asked-for prompt, or every prompt of the file in a random order."""
    from ptp.data.prompts import read_prompts

    if args.prompt is not None:
        if not args.prompt.strip():
            raise ValueError("--prompt is empty")
        return [("your prompt", args.prompt)]
    path = Path(args.prompts) if args.prompts else model_dir / "prompts.jsonl"
    if not path.is_file():
        raise ValueError(f"no prompt file at {path}; pass --prompts FILE or --prompt TEXT")
    items = [(item.id, item.prompt) for item in read_prompts(path)]
    if args.prompt_id is None:
        return rng.sample(items, len(items))
    chosen = [item for item in items if item[0] == args.prompt_id]
    if not chosen:
        raise ValueError(f"no prompt with id {args.prompt_id!r} in {path}")
    return chosen


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text
    from transformers import AutoTokenizer

    import ptp
    from ptp.bundled import default_model_dir
    from ptp.checkpoint_format import require_checkpoint

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    piped = not sys.stdout.isatty()
    console = Console(highlight=False, emoji=False, soft_wrap=piped)
    model_dir = Path(args.model) if args.model else default_model_dir()
    require_checkpoint(model_dir)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    candidates = _candidates(args, model_dir, random.Random(seed))
    start = time.perf_counter()
    with console.status("loading the model (the first run converts the teacher, ~30 s)"):
        model = ptp.PTPModel.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))
    load_seconds = time.perf_counter() - start
    method = args.method or model.default_method
    sampling = sampling_from_args(args, model.cfg.sampling)
    options = dict(slot_budget=args.slot_budget, eos_token_id=_eos(model, tokenizer))
    prompt_id, text, ids, try_seed = "", "", [], seed
    for attempt, (prompt_id, text) in enumerate(candidates[:MAX_TRIES]):  # noqa: B007 (the last one is shown)
        ids = prompt_ids(tokenizer, text)
        # Warm-up (first-call overheads); a prompt the model ends within it makes a dull demo, so the
        # next try takes another prompt *and* another seed (one seed's first u may always pick EOS).
        try_seed = seed + attempt
        warm = ptp.generate(model, ids, WARMUP_TOKENS, sampling, try_seed, method, **options)
        if len(warm.tokens) == WARMUP_TOKENS:
            break
    seed = try_seed

    console.print(Text(f"prompt {prompt_id}, seed {seed}, {_describe(sampling)}, {method}", style="bold"))
    console.print(Text(f"user: {text}", style="dim"))
    tokens, per_call, showing = [], [], 0.0
    start = time.perf_counter()
    for chunk in ptp.generate_stream(model, ids, args.max_new_tokens, sampling, seed, method, **options):
        if chunk.tokens:
            shown = time.perf_counter()
            if not piped:  # colours alternate per call; piped text stays clean (calls listed below)
                console.print(Text(tokenizer.decode(chunk.tokens), style=COLOURS[len(per_call) % 2]), end="")
            per_call.append(len(chunk.tokens))
            tokens += chunk.tokens
            showing += time.perf_counter() - shown
    ptp_seconds = time.perf_counter() - start - showing  # decoding only, like the AR time below
    if piped:
        console.print(tokenizer.decode(tokens))
        console.print(Text("tokens per teacher call: " + " ".join(map(str, per_call)), style="dim"))
    else:
        console.print()
    start = time.perf_counter()
    ar = ptp.generate(model, ids, args.max_new_tokens, sampling, seed, "ar", eos_token_id=options["eos_token_id"])
    ar_seconds = time.perf_counter() - start
    same = ar.tokens.tolist() == tokens
    grouping = "" if piped else "; colours alternate per call"
    console.print(f"{method}: {len(tokens)} tokens in {len(per_call)} teacher calls ({ptp_seconds:.2f} s), "
                  f"MAT {len(tokens) / max(len(per_call), 1):.2f} tokens per call{grouping}")
    console.print(f"ar: {len(ar.tokens)} tokens in {ar.teacher_calls} calls ({ar_seconds:.2f} s); "
                  f"model loaded in {load_seconds:.1f} s")
    console.print(f"speedup {ar_seconds / max(ptp_seconds, 1e-9):.2f}x; outputs identical: "
                  + ("[bold green]yes[/]" if same else "[bold red]NO[/]"))
    return 0 if same else 1


def _eos(model, tokenizer) -> list[int]:
    """End of text and end of turn: the tokenizer's EOS and the teacher's generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(model.teacher.generation_config, "eos_token_id", None)
    ids |= {configured} if isinstance(configured, int) else set(configured or [])
    return sorted(ids)


def _describe(s) -> str:
    return "greedy" if s.greedy else f"T={s.temperature:g}, top-k {s.top_k}, top-p {s.top_p:g}"
