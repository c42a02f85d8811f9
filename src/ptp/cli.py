"""The ``ptp`` command line. The only module that touches argv, YAML, the environment and the terminal.

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares its arguments (with defaults shown in
``--help``) and ``_run_<name>(args)`` builds config objects and calls library functions.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ptp.sampling import SamplingConfig


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_sampling_args(parser: argparse.ArgumentParser, defaults: SamplingConfig | None = None) -> None:
    """--temperature/--top-k/--top-p; None means "use the model's stored SamplingConfig"."""
    group = parser.add_argument_group("sampling")
    d = defaults
    group.add_argument("--temperature", type=float, default=d.temperature if d else None,
                       help="0 = greedy; default: the SamplingConfig the model was distilled at")
    group.add_argument("--top-k", type=int, default=d.top_k if d else None, help="0 = off")
    group.add_argument("--top-p", type=float, default=d.top_p if d else None, help="1 = off")


def sampling_from_args(args: argparse.Namespace, fallback: SamplingConfig) -> SamplingConfig:
    """A SamplingConfig from the parsed flags, taking unset ones from ``fallback``."""
    return SamplingConfig(
        temperature=fallback.temperature if args.temperature is None else args.temperature,
        top_k=fallback.top_k if args.top_k is None else args.top_k,
        top_p=fallback.top_p if args.top_p is None else args.top_p,
    )


# -- generate -------------------------------------------------------------------------------------
def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text with a PTP model", formatter_class=_Formatter,
                       description="Generate a completion for one prompt and report calls and MAT.")
    p.add_argument("--model", required=True, help="PTP checkpoint directory (ptp_config.json + adapter)")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--method", default="pqd", choices=["ar", "draft-verify", "pqd"])
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slot-budget", type=int, default=16, help="pqd: u-slots per call")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON record instead of text")
    add_sampling_args(p)


def _run_generate(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    import ptp

    model = ptp.PTPModel.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir(args.model))
    sampling = sampling_from_args(args, model.cfg.sampling)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids[0]
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


def _tokenizer_dir(model_dir: str) -> str:
    """Tokenizer files sit next to the checkpoint or inside its teacher/ folder."""
    from pathlib import Path

    root = Path(model_dir)
    for candidate in (root, root / "teacher", root / "tokenizer"):
        if (candidate / "tokenizer.json").is_file() or (candidate / "tokenizer_config.json").is_file():
            return str(candidate)
    raise SystemExit(f"no tokenizer found in {root} (looked for tokenizer.json in it, teacher/, tokenizer/)")


COMMANDS = {
    "generate": (_add_generate, _run_generate),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptp", formatter_class=_Formatter,
        description="Parallel Token Prediction: several tokens per forward call, the teacher's exact distribution.",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command][1](args) or 0
    except ValueError as err:  # bad input: a clear message, no traceback
        print(f"ptp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
