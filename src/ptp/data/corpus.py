"""The Python-code corpus: the interpreter's standard library plus installed packages' .py sources.

Why: the stdlib alone is a few million tokens and a teacher memorises it; the sources of
the project's own dependencies add tens of millions of tokens of real code nobody here wrote.

Terms:
- source tree: a directory of .py files with a name and version (``stdlib`` = the running
  interpreter's standard library without site-packages; otherwise an importable top-level package).
- relative path: ``<tree name>/<path inside the tree>`` with forward slashes, e.g.
  ``torch/nn/modules/linear.py``. It identifies a file in the manifest and decides its split.
- split: train / val / test, chosen by a SHA-256 hash of the relative path, so a file lands in the same
  split on every machine and with every package list. Test-split files never enter training.
- decontamination: a val/test file whose line shingles (runs of ``SHINGLE_LINES`` lines) mostly occur in train
  files is a near-copy of training data; it is moved to train (``max_heldout_overlap``, recorded in
  the manifest's ``moved_to_train``), so held-out loss and prompts measure unseen code.

Output directory: ``manifest.json`` and one JSONL per split (``train.jsonl``, ...), one line per file:
``{"path": relative path, "text": source}``. Identical files (after newline normalisation) are kept
once (the first in source order, then path order); unreadable, binary, empty and huge files are skipped
and counted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = "ptp-python-corpus"
VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
# Import names; chosen to cover the project's dependencies and their larger pure-Python dependencies.
DEFAULT_PACKAGES = (
    "torch", "torchgen", "transformers", "numpy", "sympy", "mpmath", "networkx", "matplotlib",
    "accelerate", "huggingface_hub", "safetensors", "tokenizers", "pyarrow", "tqdm", "rich", "pygments",
    "markdown_it", "yaml", "jinja2", "fsspec", "filelock", "packaging", "fastapi", "starlette", "pydantic",
    "uvicorn", "httpx", "httpcore", "anyio", "hypothesis", "_pytest", "setuptools",
)
SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})
SPLIT_HASH_BITS = 64  # leading bits of SHA-256(relative path) mapped to [0, 1)
# Held-out decontamination: a file's "near-copy fingerprints" (line shingles) are its runs of this many
# consecutive non-blank stripped lines. Path-hash splits alone leave near-copies on both sides (measured on our
# corpus: 66 % of transformers' val shingles occur in train, via modular_x.py / modeling_x.py pairs and
# "Copied from" blocks), which would make held-out loss and benchmark prompts look better than they are.
SHINGLE_LINES = 3
SKIP_REASONS = ("too_large", "unreadable", "binary", "not_utf8", "empty", "duplicate")


@dataclass(frozen=True)
class CorpusConfig:
    """What goes into the corpus and how it is split."""

    packages: tuple[str, ...] = DEFAULT_PACKAGES  # import names of installed packages to include
    include_stdlib: bool = True  # the running interpreter's standard library (without site-packages)
    require_packages: bool = False  # True: a package that is not installed is an error, not a skip
    split_fractions: tuple[float, float, float] = (0.96, 0.02, 0.02)  # train, val, test
    max_file_bytes: int = 512_000  # larger files (mostly generated tables) are skipped
    max_heldout_overlap: float = 0.5  # val/test files with more of their line shingles in train move to train

    def __post_init__(self) -> None:
        fractions = self.split_fractions
        if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise ValueError(f"split_fractions must be {len(SPLITS)} non-negative numbers summing to 1, "
                             f"got {fractions!r}")
        if not 0.0 <= self.max_heldout_overlap <= 1.0:
            raise ValueError(f"max_heldout_overlap must be in [0, 1], got {self.max_heldout_overlap!r}")
        if self.max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be positive, got {self.max_file_bytes!r}")
        if not self.include_stdlib and not self.packages:
            raise ValueError("the corpus would be empty: no stdlib and no packages")


@dataclass(frozen=True)
class SourceTree:
    name: str  # "stdlib" or the import name; the first component of relative paths
    version: str  # interpreter version for the stdlib, distribution version for packages
    distribution: str | None  # the installed distribution providing the package
    root: Path


@dataclass
class _Tally:
    files: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)


def split_of(rel_path: str, fractions: tuple[float, float, float]) -> str:
    """The split of a relative path: a hash of the path in [0, 1) against cumulative fractions."""
    digest = hashlib.sha256(rel_path.encode()).digest()
    x = int.from_bytes(digest[: SPLIT_HASH_BITS // 8], "big") / 2**SPLIT_HASH_BITS
    cumulative = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if x < cumulative:
            return name
    return SPLITS[-1]


def stdlib_tree() -> SourceTree:
    return SourceTree("stdlib", platform.python_version(), None, Path(sysconfig.get_paths()["stdlib"]))


def package_tree(name: str) -> SourceTree | None:
    """The installed package ``name`` as a source tree, or None if it is not installed (not imported)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    dists = importlib.metadata.packages_distributions().get(name, [])
    dist = dists[0] if dists else None
    version = importlib.metadata.version(dist) if dist else "unknown"
    return SourceTree(name, version, dist, root)


def find_trees(cfg: CorpusConfig) -> tuple[list[SourceTree], list[str]]:
    """The source trees to read, in order, and the configured packages that are not installed."""
    trees = [stdlib_tree()] if cfg.include_stdlib else []
    missing = []
    for name in cfg.packages:
        tree = package_tree(name)
        if tree is None:
            if cfg.require_packages:
                raise ValueError(f"package {name!r} is not installed")
            missing.append(name)
        else:
            trees.append(tree)
    return trees, missing


def iter_py_files(root: Path) -> Iterator[Path]:
    """.py files under root in sorted path order, skipping caches and nested site-packages."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


def read_source(path: Path, max_bytes: int) -> tuple[str | None, str | None]:
    """(text, None) for a usable source file, else (None, reason) with reason in SKIP_REASONS."""
    try:
        if path.stat().st_size > max_bytes:
            return None, "too_large"
        data = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if b"\0" in data:
        return None, "binary"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "not_utf8"
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        return None, "empty"
    return text, None



def line_shingles(text: str) -> list[tuple[str, ...]]:
    """Every run of SHINGLE_LINES consecutive non-blank lines of text, stripped: near-copy fingerprints."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    return [tuple(lines[i : i + SHINGLE_LINES]) for i in range(len(lines) - SHINGLE_LINES + 1)]


def overlap_with(texts: list[str], reference: Iterable[str]) -> list[float]:
    """Per text, the fraction of its line shingles that also occur in the reference texts."""
    shingles = [set(line_shingles(t)) for t in texts]
    wanted = set().union(*shingles)
    found = set()
    for text in reference:
        found.update(w for w in line_shingles(text) if w in wanted)
    return [len(w & found) / len(w) if w else 0.0 for w in shingles]


def _collect(trees: list[SourceTree], cfg: CorpusConfig, on_file: Callable[[str], None] | None,
             skipped: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(tree name, relative path, text) of every usable, first-seen file, in source then path order."""
    files = []
    seen: set[bytes] = set()
    for tree in trees:
        for path in iter_py_files(tree.root):
            rel = f"{tree.name}/{path.relative_to(tree.root).as_posix()}"
            if on_file is not None:
                on_file(rel)
            text, reason = read_source(path, cfg.max_file_bytes)
            if text is not None:
                digest = hashlib.sha256(text.encode()).digest()
                reason = "duplicate" if digest in seen else None
                seen.add(digest)
            if reason is not None:
                skipped[reason].append(rel)
            else:
                files.append((tree.name, rel, text))
    return files


def _assign_splits(files: list[tuple[str, str, str]], cfg: CorpusConfig) -> tuple[list[str], list[str]]:
    """Split per file (by path hash), then held-out near-copies of train moved to train; also the moved paths."""
    splits = [split_of(rel, cfg.split_fractions) for _, rel, _ in files]
    held = [i for i, s in enumerate(splits) if s != "train"]
    if cfg.max_heldout_overlap >= 1.0 or not held:
        return splits, []
    train_texts = (text for (_, _, text), s in zip(files, splits, strict=True) if s == "train")
    overlap = overlap_with([files[i][2] for i in held], train_texts)
    moved = [i for i, o in zip(held, overlap, strict=True) if o > cfg.max_heldout_overlap]
    for i in moved:
        splits[i] = "train"
    return splits, [files[i][1] for i in moved]


def build_corpus(cfg: CorpusConfig, out_dir: str | Path, overwrite: bool = False,
                 on_file: Callable[[str], None] | None = None) -> dict:
    """Collect, dedupe and split the sources into ``out_dir``; returns the manifest (also written).

    ``on_file(relative_path)`` is called once per .py file seen (for progress bars).
    """
    out = Path(out_dir)
    if (out / MANIFEST).exists() and not overwrite:
        raise ValueError(f"{out} already holds a corpus (pass overwrite to rebuild it)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-rebuilt corpus must not look complete
    trees, missing = find_trees(cfg)
    skipped: dict[str, list[str]] = {r: [] for r in SKIP_REASONS}
    files = _collect(trees, cfg, on_file, skipped)
    splits, moved = _assign_splits(files, cfg)
    tallies = {s: _Tally() for s in SPLITS}
    tree_tallies = {t.name: _Tally() for t in trees}
    handles = {s: open(out / f"{s}.jsonl.tmp", "w", encoding="utf-8") for s in SPLITS}  # noqa: SIM115
    try:
        for (tree, rel, text), split in zip(files, splits, strict=True):
            handles[split].write(json.dumps({"path": rel, "text": text}, ensure_ascii=False) + "\n")
            size = len(text.encode())
            for tally in (tallies[split], tree_tallies[tree]):
                tally.files += 1
                tally.bytes += size
            tallies[split].paths.append(rel)
    finally:
        for handle in handles.values():
            handle.close()
    for split in SPLITS:
        os.replace(out / f"{split}.jsonl.tmp", out / f"{split}.jsonl")
    manifest = _manifest(cfg, trees, missing, tallies, tree_tallies, skipped)
    manifest["moved_to_train"] = moved
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def _manifest(cfg, trees, missing, tallies, tree_tallies, skipped) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "config": asdict(cfg),
        "sources": [{"name": t.name, "version": t.version, "distribution": t.distribution, "root": str(t.root),
                     "files": tree_tallies[t.name].files, "bytes": tree_tallies[t.name].bytes} for t in trees],
        "missing_packages": missing,
        "splits": {s: {"file": f"{s}.jsonl", "files": t.files, "bytes": t.bytes, "paths": t.paths}
                   for s, t in tallies.items()},
        "skipped": {r: {"count": len(p), "paths": p} for r, p in skipped.items()},
    }


def read_corpus_manifest(corpus_dir: str | Path) -> dict:
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{corpus_dir} is not a corpus directory: {MANIFEST} is missing (run `ptp corpus`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt corpus manifest {path}: {err}") from err
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest")
    return manifest


def iter_corpus_files(corpus_dir: str | Path, split: str) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every file of a split, in manifest order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    manifest = read_corpus_manifest(corpus_dir)
    path = Path(corpus_dir) / manifest["splits"][split]["file"]
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
                yield record["path"], record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{line_no}: corrupt corpus record ({err})") from err
