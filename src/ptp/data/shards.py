"""Token shards: sequences of token ids on disk, in Parquet, with a JSON manifest.

A shard directory holds ``manifest.json`` and ``shard-00000.parquet``, ``shard-00001.parquet``, ...
Each Parquet row is one sequence:

- ``tokens``: list<int32>, the token ids of the sequence;
- ``prompt_len``: int32, how many leading tokens are prompt/context only (0 for plain documents).

The manifest (``FORMAT``, ``VERSION``)::

    {"format": "ptp-token-shards", "version": 1,
     "kind": "teacher-samples" | "documents",
     "sampling": SamplingConfig dict or null,      # the config teacher samples were drawn under
     "teacher_fingerprint": dict or null,          # ptp.checkpoint_format.fingerprint(teacher)
     "tokenizer": str or null,                     # path or name of the tokenizer
     "complete": bool,                             # false while a writer is still adding shards
     "counts": {"sequences": int, "tokens": int},
     "shards": [{"file": str, "rows": int, "tokens": int}, ...],
     "extra": {...}}                               # free-form provenance

Crash safety: every shard is written to a temporary file and renamed into place, and the manifest is
rewritten atomically (temp file + rename) after each shard. A writer killed at any moment therefore
leaves a directory whose manifest lists only complete shards; at most the open shard is lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ptp.sampling import SamplingConfig

FORMAT = "ptp-token-shards"
VERSION = 1
KINDS = ("teacher-samples", "documents")
MANIFEST = "manifest.json"
SHARD_PATTERN = "shard-{:05d}.parquet"
TMP_SUFFIX = ".tmp"
DEFAULT_ROWS_PER_SHARD = 1024  # sequences per Parquet file (code documents: ~5 M tokens, ~5 MB)
# zstd level 9: ~1.06 bytes per token on the code corpus with an 8k vocabulary (snappy: 1.45; level 19
# saves 5 % more at 7x the write time), so the 57 M-token train split fits the 64 MiB device carry.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 9
READ_BATCH_ROWS = 256  # rows converted to Python lists at a time while iterating
# The fields a caller supplies; everything else in the manifest is bookkeeping.
DESCRIPTIVE_FIELDS = ("kind", "sampling", "teacher_fingerprint", "tokenizer", "extra")
SCHEMA = pa.schema([("tokens", pa.list_(pa.int32())), ("prompt_len", pa.int32())])


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _normalise_fields(fields: dict) -> dict:
    """The descriptive manifest fields with defaults filled in and values checked."""
    unknown = set(fields) - set(DESCRIPTIVE_FIELDS)
    if unknown:
        raise ValueError(f"unknown manifest fields {sorted(unknown)}; allowed: {list(DESCRIPTIVE_FIELDS)}")
    kind = fields.get("kind")
    if kind not in KINDS:
        raise ValueError(f"manifest kind must be one of {list(KINDS)}, got {kind!r}")
    sampling = fields.get("sampling")
    if isinstance(sampling, SamplingConfig):
        sampling = sampling.to_dict()
    elif sampling is not None:
        sampling = SamplingConfig.from_dict(dict(sampling)).to_dict()  # validates
    tokenizer = fields.get("tokenizer")
    return {
        "kind": kind,
        "sampling": sampling,
        "teacher_fingerprint": fields.get("teacher_fingerprint"),
        "tokenizer": None if tokenizer is None else str(tokenizer),
        "extra": dict(fields.get("extra") or {}),
    }


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a shard directory, checked for format and version."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{directory} is not a token-shard directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt manifest {path}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported version {manifest.get('version')!r} (this ptp reads {VERSION})")
    for key in ("kind", "counts", "shards"):
        if key not in manifest:
            raise ValueError(f"corrupt manifest {path}: no {key!r}")
    return manifest


class ShardWriter:
    """Append sequences to a shard directory, one Parquet file per ``rows_per_shard`` sequences.

    ``manifest_fields`` holds the descriptive fields (see ``DESCRIPTIVE_FIELDS``); ``sampling`` may be a
    SamplingConfig. With ``resume=True`` an existing directory with the same descriptive fields is
    continued after its last complete shard (leftover temp files are removed); without it, a
    directory that already has a manifest is refused.
    """

    def __init__(self, directory: str | Path, manifest_fields: dict,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, resume: bool = False) -> None:
        if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be a positive integer, got {rows_per_shard!r}")
        self.directory = Path(directory)
        self.rows_per_shard = rows_per_shard
        fields = _normalise_fields(manifest_fields)
        self.directory.mkdir(parents=True, exist_ok=True)
        if (self.directory / MANIFEST).exists():
            if not resume:
                raise ValueError(f"{self.directory} already holds token shards (pass resume=True to continue)")
            self.manifest = self._reopen(fields)
        else:
            self.manifest = {"format": FORMAT, "version": VERSION, **fields, "complete": False,
                             "counts": {"sequences": 0, "tokens": 0}, "shards": []}
            _write_json_atomic(self.directory / MANIFEST, self.manifest)
        self._tokens: list[list[int]] = []
        self._prompt_lens: list[int] = []

    def _reopen(self, fields: dict) -> dict:
        manifest = read_manifest(self.directory)
        for key in ("kind", "sampling", "teacher_fingerprint", "tokenizer", "extra"):
            if manifest.get(key) != fields[key]:
                raise ValueError(f"cannot resume {self.directory}: {key} differs "
                                 f"(stored {manifest.get(key)!r}, requested {fields[key]!r})")
        listed = {s["file"] for s in manifest["shards"]}
        for path in self.directory.iterdir():  # a killed writer's partial files
            if path.name.endswith(TMP_SUFFIX) or (path.suffix == ".parquet" and path.name not in listed):
                path.unlink()
        manifest["complete"] = False
        return manifest

    @property
    def num_sequences(self) -> int:
        """Sequences written to complete shards plus those buffered in the open shard."""
        return self.manifest["counts"]["sequences"] + len(self._tokens)

    def add(self, tokens: Sequence[int], prompt_len: int = 0) -> None:
        """Buffer one sequence; writes a shard when ``rows_per_shard`` sequences are buffered."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("cannot add an empty sequence")
        if not 0 <= prompt_len <= len(tokens):
            raise ValueError(f"prompt_len must be in [0, {len(tokens)}], got {prompt_len!r}")
        self._tokens.append(tokens)
        self._prompt_lens.append(int(prompt_len))
        if len(self._tokens) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the buffered sequences as a shard now (no-op when none are buffered)."""
        if not self._tokens:
            return
        name = SHARD_PATTERN.format(len(self.manifest["shards"]))
        table = pa.table({"tokens": pa.array(self._tokens, type=pa.list_(pa.int32())),
                          "prompt_len": pa.array(self._prompt_lens, type=pa.int32())}, schema=SCHEMA)
        tmp = self.directory / (name + TMP_SUFFIX)
        pq.write_table(table, tmp, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL)
        os.replace(tmp, self.directory / name)
        n_tokens = sum(len(t) for t in self._tokens)
        self.manifest["shards"].append({"file": name, "rows": len(self._tokens), "tokens": n_tokens})
        self.manifest["counts"]["sequences"] += len(self._tokens)
        self.manifest["counts"]["tokens"] += n_tokens
        _write_json_atomic(self.directory / MANIFEST, self.manifest)
        self._tokens, self._prompt_lens = [], []

    def close(self) -> dict:
        """Write the open shard, mark the directory complete; returns the final manifest."""
        self.flush()
        self.manifest["complete"] = True
        _write_json_atomic(self.directory / MANIFEST, self.manifest)
        return self.manifest

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


class TokenShards:
    """Read a shard directory: ``len()`` sequences, ``num_tokens`` tokens, ``iter_sequences(start)``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self._shards = self.manifest["shards"]
        for entry in self._shards:
            if not (self.directory / entry["file"]).is_file():
                raise ValueError(f"{self.directory}: shard {entry['file']} listed in the manifest is missing")

    def __len__(self) -> int:
        return int(self.manifest["counts"]["sequences"])

    @property
    def num_tokens(self) -> int:
        return int(self.manifest["counts"]["tokens"])

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def sampling(self) -> SamplingConfig | None:
        data = self.manifest.get("sampling")
        return None if data is None else SamplingConfig.from_dict(data)

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def read_shard(self, index: int) -> pa.Table:
        """Shard ``index`` as a table with columns tokens (list<int32>) and prompt_len (int32)."""
        entry = self._shards[index]
        path = self.directory / entry["file"]
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"corrupt shard {path}: {err}") from err
        if table.schema.names != SCHEMA.names or table.num_rows != entry["rows"]:
            raise ValueError(f"corrupt shard {path}: expected {entry['rows']} rows with columns {SCHEMA.names}, "
                             f"found {table.num_rows} rows with {table.schema.names}")
        return table

    def iter_sequences(self, start: int = 0) -> Iterator[tuple[list[int], int]]:
        """(tokens, prompt_len) for sequences start, start + 1, ... in shard order."""
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(self):
            raise ValueError(f"start must be a sequence index in [0, {len(self)}], got {start!r}")
        first = 0  # index of the first sequence of the current shard
        for index, entry in enumerate(self._shards):
            rows = entry["rows"]
            if first + rows > start:
                skip = max(0, start - first)
                table = self.read_shard(index).slice(skip)
                for batch in table.to_batches(max_chunksize=READ_BATCH_ROWS):
                    yield from zip(batch.column("tokens").to_pylist(), batch.column("prompt_len").to_pylist(),
                                   strict=True)
            first += rows
