"""Documents (plain text units of training data) from user corpora, and their tokenisation into shards.

Supported sources (``DocumentSource.format``; ``"auto"`` detects it from the path):
- ``text``: one text file is one document; a directory contributes every file matching ``glob``
  (recursively, sorted by path);
- ``jsonl``: one document per line, the string under ``field``;
- ``hf-disk``: a Hugging Face dataset written by ``Dataset.save_to_disk`` (its Arrow stream files are
  read with pyarrow, so the ``datasets`` package is not needed); for a ``DatasetDict``, ``split`` picks
  the sub-dataset; the column is ``field``;
- ``corpus``: a split of a ``ptp corpus`` directory (``split``).

``tokenize_documents`` writes documents as token shards of kind ``"documents"``: one row per document,
its tokens (with the tokenizer's own special tokens, e.g. a leading BOS) followed by EOS, ``prompt_len`` 0.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pyarrow as pa

from ptp.data import corpus
from ptp.data.shards import DEFAULT_ROWS_PER_SHARD, ShardWriter

FORMATS = ("auto", "text", "jsonl", "hf-disk", "corpus")
TOKENIZE_BATCH = 256  # documents per tokenizer call (the fast tokenizer parallelises within a call)


@dataclass(frozen=True)
class DocumentSource:
    """Where documents come from."""

    path: str  # file or directory
    format: str = "auto"  # one of FORMATS
    field: str = "text"  # jsonl / hf-disk: the column holding the text
    split: str = "train"  # corpus: train/val/test; hf-disk DatasetDict: the sub-dataset
    glob: str = "*.txt"  # text directories: which files are documents

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown document format {self.format!r}; valid: {list(FORMATS)}")


def detect_format(path: str | Path) -> str:
    """The concrete format of a path (never "auto")."""
    p = Path(path)
    if p.is_dir():
        if (p / corpus.MANIFEST).is_file() and _is_corpus(p):
            return "corpus"
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return "hf-disk"
        return "text"
    if p.is_file():
        return "jsonl" if p.suffix in (".jsonl", ".ndjson") else "text"
    raise ValueError(f"document source {path} does not exist")


def _is_corpus(p: Path) -> bool:
    try:
        return json.loads((p / corpus.MANIFEST).read_text()).get("format") == corpus.FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def iter_documents(source: DocumentSource) -> Iterator[str]:
    """The documents of a source, in a deterministic order."""
    fmt = detect_format(source.path) if source.format == "auto" else source.format
    if fmt == "text":
        return iter_text_files(source.path, source.glob)
    if fmt == "jsonl":
        return iter_jsonl(source.path, source.field)
    if fmt == "hf-disk":
        return iter_hf_disk(source.path, source.field, source.split)
    return (text for _, text in corpus.iter_corpus_files(source.path, source.split))


def iter_text_files(path: str | Path, glob: str = "*.txt") -> Iterator[str]:
    """A file as one document, or every file matching ``glob`` under a directory (sorted)."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob(glob) if f.is_file())
        if not files:
            raise ValueError(f"no files matching {glob!r} under {p}")
    else:
        raise ValueError(f"document source {p} does not exist")
    for f in files:
        try:
            yield f.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{f} is not UTF-8 text: {err}") from err


def iter_json_records(path: str | Path, required: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; each must hold string ``required``."""
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err})") from err
            if not isinstance(record, dict) or not isinstance(record.get(required), str):
                raise ValueError(f"{path}:{line_no}: no string field {required!r}")
            yield line_no, record


def iter_jsonl(path: str | Path, field: str = "text") -> Iterator[str]:
    """The string under ``field`` of each non-blank line of a JSONL file."""
    for _, record in iter_json_records(path, field):
        yield record[field]


def iter_hf_disk(path: str | Path, field: str = "text", split: str = "train") -> Iterator[str]:
    """Column ``field`` of a dataset saved with ``save_to_disk`` (DatasetDict: sub-dataset ``split``)."""
    root = Path(path)
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise ValueError(f"{root}: no split {split!r} (has {splits})")
        root = root / split
    state_path = root / "state.json"
    if not state_path.is_file():
        raise ValueError(f"{root} is not a dataset saved with save_to_disk (no state.json)")
    files = [entry["filename"] for entry in json.loads(state_path.read_text())["_data_files"]]
    for name in files:
        with pa.memory_map(str(root / name)) as source:
            reader = pa.ipc.open_stream(source)
            if field not in reader.schema.names:
                raise ValueError(f"{root / name}: no column {field!r} (has {reader.schema.names})")
            for batch in reader:
                yield from batch.column(field).to_pylist()


def tokenize_documents(documents: Iterable[str], tokenizer, out_dir: str | Path, *,
                       tokenizer_name: str | None = None, extra: dict | None = None,
                       rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                       shuffle_seed: int | None = 0,
                       on_batch: Callable[[int, int], None] | None = None) -> dict:
    """Write ``documents`` as token shards of kind "documents" (tokens + EOS per document).

    ``tokenizer`` is a Hugging Face tokenizer with an EOS token. Empty documents are skipped.
    Documents are shuffled (in memory) with ``shuffle_seed`` unless it is None: sources such as the
    code corpus come ordered by package, and training reads one shard at a time, so unshuffled shards
    would show a short run a single package. ``on_batch(documents, tokens)`` is called after each
    tokenised batch. Returns the manifest.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token; documents need one as a separator")
    fields = {"kind": "documents", "tokenizer": tokenizer_name or getattr(tokenizer, "name_or_path", None),
              "extra": extra or {}}
    if shuffle_seed is not None:
        documents = list(documents)
        random.Random(shuffle_seed).shuffle(documents)
    docs = iter(documents)
    with ShardWriter(out_dir, fields, rows_per_shard) as writer:
        while raw := list(islice(docs, TOKENIZE_BATCH)):
            batch = [d for d in raw if d]
            # add_special_tokens: a tokenizer that starts every text with BOS (ours does) does so here
            # too, so training documents begin exactly as prompts at inference do.
            ids = tokenizer(batch, add_special_tokens=True)["input_ids"] if batch else []
            rows = [t if t and t[-1] == eos else [*t, eos] for t in ids]
            for tokens in rows:
                writer.add(tokens)
            if on_batch is not None:
                on_batch(len(raw), sum(len(t) for t in rows))
    return writer.manifest
