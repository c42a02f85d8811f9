"""Argument helpers shared by the subcommands (light: importing this module imports no torch)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ptp.checkpoint_format import tokenizer_dir  # light: torch is imported only to hash or read weights
from ptp.cli.defaults import DOCUMENT_FORMATS

if TYPE_CHECKING:
    from ptp.data.documents import DocumentSource
    from ptp.sampling import SamplingConfig

__all__ = [
    "Formatter",
    "add_device_arg",
    "add_document_args",
    "add_sampling_args",
    "document_source",
    "non_negative_int",
    "nonblank_text",
    "positive_int",
    "prompt_ids",
    "sampling_from_args",
    "tokenizer_dir",
    "torch_device",
]


def add_document_args(p: argparse.ArgumentParser) -> None:
    """--format/--field/--split/--glob: how to read a document source."""
    g = p.add_argument_group("document source")
    g.add_argument("--format", default="auto", choices=DOCUMENT_FORMATS, help="how to read the data path")
    g.add_argument("--field", default="text", help="JSONL / HF dataset: the text column")
    g.add_argument("--split", default="train", help="corpus split, or HF DatasetDict split")
    g.add_argument("--glob", default="*.txt", help="text directory: which files are documents")


def add_device_arg(p: argparse.ArgumentParser, what: str = "the model runs") -> None:
    """--device: cpu (default), cuda or cuda:N; check it with ``torch_device`` inside ``run``."""
    p.add_argument("--device", default="cpu", help=f"where {what}: cpu, cuda or cuda:N")


def torch_device(name: str):
    """The torch.device a --device value names; ValueError (the CLI's one-line error, exit 2) for a name
    torch does not know or a GPU it cannot see. Imports torch: call it in ``run``, not while parsing."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device (cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} asked for, but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def document_source(path: str, args: argparse.Namespace) -> DocumentSource:
    from ptp.data.documents import DocumentSource

    return DocumentSource(path, format=args.format, field=args.field, split=args.split, glob=args.glob)


def prompt_ids(tokenizer, text: str, chat: bool = True) -> list[int]:
    """Token ids of a prompt: a user turn through the chat template when the tokenizer has one, else as is."""
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        return list(ids if isinstance(ids, list) else ids["input_ids"])
    return list(tokenizer(text).input_ids)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep docstring line breaks; append "(default: X)" to an option's help unless the help already
    says what the default is or there is none to show (None, a False flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str, limit: int | None = None) -> int:
    """argparse type: a whole number >= 0 (and below ``limit`` if given)."""
    value = _whole_number(text)
    if value < 0 or (limit is not None and value >= limit):
        bound = f"in [0, {limit - 1}]" if limit is not None else ">= 0"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    return value


def nonblank_text(text: str) -> str:
    """argparse type: text with at least one character that is not whitespace."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty" if not text else "is only whitespace")
    return text


def add_sampling_args(parser: argparse.ArgumentParser, defaults: SamplingConfig | None = None) -> None:
    """--temperature/--top-k/--top-p; without defaults, unset flags mean "the model's stored config".

    ``defaults`` needs only ``temperature``, ``top_k`` and ``top_p`` attributes (a SamplingConfig or a
    namespace of literals, so that building the parser imports no torch).
    """
    group = parser.add_argument_group("sampling")
    d = defaults
    group.add_argument("--temperature", type=float, default=d.temperature if d else None,
                       help="0 = greedy" + ("" if d else "; default: the SamplingConfig the model was distilled at"))
    group.add_argument("--top-k", type=int, default=d.top_k if d else None, help="0 = off")
    group.add_argument("--top-p", type=float, default=d.top_p if d else None, help="1 = off")


def sampling_from_args(args: argparse.Namespace, fallback: SamplingConfig) -> SamplingConfig:
    """A SamplingConfig from the parsed flags, taking unset ones (and the CDF order) from ``fallback``."""
    from ptp.sampling import SamplingConfig

    return SamplingConfig(
        temperature=fallback.temperature if args.temperature is None else args.temperature,
        top_k=fallback.top_k if args.top_k is None else args.top_k,
        top_p=fallback.top_p if args.top_p is None else args.top_p,
        order=fallback.order,
    )
