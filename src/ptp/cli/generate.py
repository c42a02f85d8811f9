"""Generate a completion for one prompt with a PTP checkpoint and report calls and MAT."""

from __future__ import annotations

import argparse
import json
import sys

from ptp.cli.common import (
    add_sampling_args,
    non_negative_int,
    nonblank_text,
    positive_int,
    prompt_ids,
    sampling_from_args,
    tokenizer_dir,
)
from ptp.cli.defaults import DECODE_METHODS, SEED_LIMIT

NAME = "generate"
HELP = "generate text with a PTP model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="PTP checkpoint directory (ptp_config.json + adapter)")
    p.add_argument("--prompt", required=True, type=nonblank_text, help="prompt text")
    p.add_argument("--method", default=None, choices=list(DECODE_METHODS),
                   help="decoding method (all give the same tokens for a seed; default: the model's fastest)")
    p.add_argument("--raw", action="store_true", help="tokenise the prompt as is, not as a chat user turn")
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="tokens to generate")
    p.add_argument("--seed", type=_seed, default=0, help="u-stream seed")
    p.add_argument("--slot-budget", type=int, default=None, help="pqd: u-slots per call (default: the model's)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON record instead of text")
    add_sampling_args(p)


def _seed(text: str) -> int:
    """The bounds the server enforces: a seed must fit a torch.Generator."""
    return non_negative_int(text, SEED_LIMIT)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    import ptp

    model = ptp.PTPModel.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(args.model))
    sampling = sampling_from_args(args, model.cfg.sampling)
    ids = prompt_ids(tokenizer, args.prompt, chat=not args.raw)
    out = ptp.generate(model, ids, args.max_new_tokens, sampling, args.seed, args.method,
                       slot_budget=args.slot_budget, stop_strings=args.stop, tokenizer=tokenizer)
    text = tokenizer.decode(out.tokens)
    if args.json:
        print(json.dumps({"text": text, "tokens": out.tokens.tolist(), "calls": out.calls,
                          "teacher_calls": out.teacher_calls, "mat": out.mat, "stop_reason": out.stop_reason}))
    else:
        print(args.prompt + text)
        print(f"\n[{len(out.tokens)} tokens, {out.teacher_calls} teacher calls, MAT {out.mat:.2f}, "
              f"{out.tokens_per_second:.1f} tok/s, stop: {out.stop_reason}]", file=sys.stderr)
    return 0
