"""Build the Python-code corpus: the stdlib plus installed packages' .py sources, split by file path.

Writes OUT/manifest.json (packages and versions, per-split file lists and sizes, skipped files) and
OUT/{train,val,test}.jsonl with one {"path", "text"} record per file. Test-split files never enter
training; they supply the benchmark prompts (`ptp prompts`).
"""

from __future__ import annotations

import argparse
import sys
import time

from ptp.cli.defaults import CORPUS, CORPUS_PACKAGES

NAME = "corpus"
HELP = "build the Python-code corpus (stdlib + installed packages)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/corpus", help="output directory")
    p.add_argument("--packages", default=",".join(CORPUS_PACKAGES),
                   help="comma-separated import names of installed packages to include ('' for none)")
    p.add_argument("--no-stdlib", action="store_true", help="leave out the interpreter's standard library")
    p.add_argument("--require-packages", action="store_true", help="fail if a listed package is not installed")
    p.add_argument("--split", default="0.96,0.02,0.02", help="train,val,test fractions (by hash of file path)")
    p.add_argument("--max-file-bytes", type=int, default=CORPUS.max_file_bytes, help="skip larger files")
    p.add_argument("--max-heldout-overlap", type=float, default=CORPUS.max_heldout_overlap,
                   help="val/test files with more of their 3-line shingles found in train move to train (1 = off)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing corpus directory")


def _fractions(text: str) -> tuple[float, float, float]:
    from ptp.data.corpus import SPLITS

    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError as err:
        raise ValueError(f"--split must be three comma-separated numbers, got {text!r}") from err
    if len(values) != len(SPLITS):
        raise ValueError(f"--split must be three comma-separated numbers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ptp.data.corpus import CorpusConfig, build_corpus

    cfg = CorpusConfig(packages=tuple(x.strip() for x in args.packages.split(",") if x.strip()),
                       include_stdlib=not args.no_stdlib, require_packages=args.require_packages,
                       split_fractions=_fractions(args.split), max_file_bytes=args.max_file_bytes,
                       max_heldout_overlap=args.max_heldout_overlap)
    start = time.perf_counter()
    with tqdm(desc="files", unit=" files", file=sys.stderr) as bar:
        manifest = build_corpus(cfg, args.out, overwrite=args.overwrite, on_file=lambda _: bar.update())
    elapsed = time.perf_counter() - start
    print(f"corpus written to {args.out} in {elapsed:.1f} s (Python {manifest['python']['version']})")
    for source in manifest["sources"]:
        name, version, mb = source["name"], source["version"], source["bytes"] / 1e6
        print(f"  {name:<18} {version:<14} {source['files']:>7} files {mb:>9.2f} MB")
    if manifest["missing_packages"]:
        print(f"  not installed (skipped): {', '.join(manifest['missing_packages'])}")
    for split, info in manifest["splits"].items():
        print(f"  {split:<6} {info['files']:>7} files {info['bytes'] / 1e6:>9.2f} MB")
    skipped = ", ".join(f"{reason} {info['count']}" for reason, info in manifest["skipped"].items())
    print(f"  skipped: {skipped}; held-out near-copies of train moved to train: {len(manifest['moved_to_train'])}")
    return 0
