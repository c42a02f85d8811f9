"""Train a byte-level BPE tokenizer and save it as a Hugging Face fast tokenizer directory.

DATA is a `ptp corpus` directory (its train split by default) or any document source: a text file,
a directory of text files, JSONL or a dataset saved with `save_to_disk`. The result loads with
`AutoTokenizer.from_pretrained(OUT)`; `<|endoftext|>` is BOS, EOS and padding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ptp.cli.common import add_document_args, document_source
from ptp.cli.defaults import TOKENIZER

NAME = "tokenizer"
HELP = "train a byte-level BPE tokenizer on a corpus"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/corpus", help="training text (corpus directory or document source)")
    p.add_argument("--out", default="data/tokenizer", help="output directory")
    p.add_argument("--vocab-size", type=int, default=TOKENIZER.vocab_size, help="including bytes and specials")
    p.add_argument("--min-frequency", type=int, default=TOKENIZER.min_frequency, help="least count of a merge")
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this much training text")
    p.add_argument("--no-bos", action="store_true", help="do not prepend <|endoftext|> when encoding")
    add_document_args(p)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ptp.data.documents import detect_format, iter_documents
    from ptp.data.tokenizer import TokenizerConfig, train_tokenizer

    source = document_source(args.data, args)
    fmt = detect_format(args.data) if args.format == "auto" else args.format
    if fmt == "corpus" and args.split == "test":
        raise ValueError("the test split never enters training, not even the tokenizer's")
    cfg = TokenizerConfig(vocab_size=args.vocab_size, min_frequency=args.min_frequency, add_bos=not args.no_bos,
                          max_bytes=args.max_bytes)
    provenance = {"data": str(Path(args.data).resolve()), "format": fmt, "split": args.split}
    start = time.perf_counter()
    with tqdm(desc="reading", unit="B", unit_scale=True, file=sys.stderr) as bar:
        tokenizer = train_tokenizer(iter_documents(source), cfg, args.out, provenance=provenance,
                                    on_text=bar.update)
    print(f"tokenizer with {len(tokenizer)} tokens written to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0
