"""The ``ptp`` command line: the only package that touches argv, YAML, the environment and the terminal.

Each subcommand is one module in this package defining ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; modules are discovered automatically. Library code never parses
arguments or prints.

Building the parser imports no torch, transformers, pyarrow or numpy (``ptp --help`` and argument
errors answer at once): subcommand modules import those inside ``run``, and the library defaults
their help shows are copied into ``ptp.cli.defaults`` (tested equal to the library's).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import PurePath

from ptp.cli.common import Formatter

HELPERS = ("common", "defaults", "train_config")  # modules of this package that are not subcommands


def _subcommands() -> dict:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in HELPERS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.NAME] = module
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="ptp", formatter_class=Formatter,
        description="Parallel Token Prediction: several tokens per forward call, the teacher's exact distribution.",
    )
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch CPU threads (default: $OMP_NUM_THREADS if set, else half the CPUs, 1 to 4: "
                             "two threads on two cores ran 3x slower beside one busy process, one thread did not)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = _subcommands()
    for name, module in commands.items():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__, formatter_class=Formatter)
        module.add_arguments(p)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    import torch  # only now: a command runs
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    from ptp.extras import MissingExtra

    hf_logging.disable_progress_bar()  # per-file "Loading weights" bars drown our own output
    torch.set_num_threads(args.threads or default_threads())
    try:
        return commands[args.command].run(args) or 0
    except ValueError as err:  # bad input: a clear message, no traceback
        print(f"ptp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MissingExtra as err:  # an optional dependency (e.g. the serve extra) is not installed
        print(f"ptp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except SafetensorError as err:  # a weights file that is not valid safetensors (truncated, overwritten)
        name = _safetensors_file(err) or "a .safetensors weights file"
        print(f"ptp {args.command}: error: cannot load {name}: it is corrupt or truncated ({err})", file=sys.stderr)
        return 2
    except OSError as err:  # a file missing, unreadable or unwritable (transformers reports these as OSError too)
        if isinstance(err, BrokenPipeError):  # stdout closed early (`| head`): not an input error
            raise
        print(f"ptp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ptp {args.command}: interrupted", file=sys.stderr)
        return 130


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def default_threads(environ: dict[str, str] | None = None, cpus: int | None = None) -> int:
    """Threads for a command without --threads: $OMP_NUM_THREADS if set, else half the CPUs, 1 to 4.

    Measured on 2 cores (experiments/cpu_threads): beside one busy process, 2 threads made AR 3.1x
    and draft-verify 3.6x slower, 1 thread was unaffected, and on an idle machine 2 threads gained
    only 3 % (AR) and 30 % (draft-verify). A small model gains little from many threads, and leaving
    cores free keeps a neighbour from stalling every parallel region.
    """
    environ = os.environ if environ is None else environ
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(4, cpus // 2))


def _safetensors_file(err: BaseException) -> str | None:
    """The .safetensors path the failing call was reading: SafetensorError does not name the file, but a
    local variable of the innermost Python frame that had one does (best effort; None if none did)."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, str | PurePath) and str(value).endswith(".safetensors"):
                found = str(value)
        tb = tb.tb_next
    return found
