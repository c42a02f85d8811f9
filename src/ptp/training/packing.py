"""Packing sequences into fixed-length training rows, deterministically and resumably.

Terms:
- sequence: one row of a token-shard directory (tokens, prompt_len); positions < prompt_len are
  context only and never training targets.
- piece: a sequence, or a chunk of at most ``seq_len`` tokens of a longer one.
- packed row: pieces laid end to end in ``seq_len`` tokens, the rest padding. Every piece is its own
  document: per-document position ids, and (through ``ptp.masks.document_mask``) no attention across
  documents or to padding.
- DataPosition: where the stream stands (epoch, index in that epoch's order, token offset inside a
  split sequence, rows produced so far). Packing from a position is a pure function of the data, the
  seed and the position, so a resumed run sees exactly the rows the killed run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ptp.data.shards import TokenShards
from ptp.masks import PAD_DOC

PAD_TOKEN = 0  # token id written into padding (never attended, never a target)
MIN_PIECE = 2  # a piece needs a context token and a target


@dataclass(frozen=True)
class PackingConfig:
    """How the training stream is cut into rows."""

    seq_len: int = 256  # tokens per packed row
    rows: int = 8  # packed rows per micro-batch, summed over all processes
    shuffle: bool = True  # shuffle shard order and rows inside each shard, anew every epoch
    seed: int = 0  # shuffling seed

    def __post_init__(self) -> None:
        for name in ("seq_len", "rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"packing {name} must be an integer >= 1, got {value!r}")
        if self.seq_len < MIN_PIECE:
            raise ValueError(f"packing seq_len must be >= {MIN_PIECE}, got {self.seq_len}")


@dataclass(frozen=True)
class DataConfig:
    """Where training and validation sequences come from."""

    train: str = ""  # token-shard directory (ptp.data.shards)
    val: str | None = None  # held-out shard directory; None: hold out the last val_holdout train sequences
    val_holdout: int = 64  # sequences held out of train when val is None
    val_rows: int = 16  # packed rows of the fixed validation set (first pieces of a seeded sample of sequences)
    tokenizer: str | None = None  # tokenizer directory; None: the shard manifest's

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("data.train (a token-shard directory) is required")
        if self.val_rows < 1 or self.val_holdout < 0:
            raise ValueError(f"data.val_rows must be >= 1 and val_holdout >= 0, got {self.val_rows}, "
                             f"{self.val_holdout}")


@dataclass(frozen=True)
class DataPosition:
    """Where the packed stream stands; stored in checkpoints."""

    epoch: int = 0
    sequence: int = 0  # index into the epoch's (shuffled) order
    offset: int = 0  # tokens of that sequence already packed (long sequences are split)
    rows: int = 0  # packed rows produced so far; seeds each row's window and u randomness

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataPosition:
        return cls(**{k: int(v) for k, v in data.items()})


@dataclass(frozen=True)
class PackedBatch:
    """Packed rows of one micro-batch (all tensors on CPU until moved with ``to``)."""

    tokens: torch.Tensor  # [B, S] token ids, PAD_TOKEN at padding
    doc_ids: torch.Tensor  # [B, S] document index within the row, PAD_DOC at padding
    positions: torch.Tensor  # [B, S] position id inside the document (0 at padding)
    target_ok: torch.Tensor  # [B, S] bool: may be predicted (in a document, not its first token, not prompt)
    row_ids: torch.Tensor  # [B] global index of each row in the stream (seeds its randomness)

    def to(self, device) -> PackedBatch:
        return PackedBatch(*(t.to(device) for t in (self.tokens, self.doc_ids, self.positions,
                                                    self.target_ok, self.row_ids)))

    def rows(self, start: int, stop: int) -> PackedBatch:
        """Rows start..stop-1 (one process's share of a global batch)."""
        return PackedBatch(*(t[start:stop] for t in (self.tokens, self.doc_ids, self.positions,
                                                     self.target_ok, self.row_ids)))

    def share(self, rank: int, world: int) -> PackedBatch:
        """Process ``rank``'s contiguous share of the rows (empty when there are fewer rows than processes)."""
        rows = self.tokens.shape[0]
        per = -(-rows // world)
        return self.rows(min(rows, rank * per), min(rows, (rank + 1) * per))

    @property
    def num_tokens(self) -> int:
        return int((self.doc_ids != PAD_DOC).sum())


def eval_share(batch: PackedBatch, rank: int, world: int) -> tuple[PackedBatch, bool]:
    """This process's rows of a validation batch, and whether its result counts.

    A process whose share is empty runs the batch's last row and discards the result: under FSDP
    every process must take part in every forward call.
    """
    share = batch.share(rank, world)
    if share.tokens.shape[0] > 0:
        return share, True
    rows = batch.tokens.shape[0]
    return batch.rows(rows - 1, rows), False


class SequenceSource:
    """Sequences of a shard directory in a per-epoch order, readable from any index.

    The order permutes the shards and the rows inside each shard (seeded by (seed, epoch)), so only
    one shard is held in memory. Only sequences whose storage index lies in ``keep`` = [lo, hi) are
    yielded (train / held-out splits of one directory).
    """

    def __init__(self, shards: TokenShards, shuffle: bool, seed: int, keep: tuple[int, int] | None = None) -> None:
        self.keep = keep if keep is not None else (0, len(shards))
        if not 0 <= self.keep[0] < self.keep[1] <= len(shards):
            raise ValueError(f"{shards.directory} has {len(shards)} sequences; cannot keep {self.keep}")
        self.shards = shards
        self.shuffle = shuffle
        self.seed = seed
        self._rows = [int(s["rows"]) for s in shards.manifest["shards"]]
        self._first = np.concatenate([[0], np.cumsum(self._rows)])  # storage index of each shard's row 0
        self._cached: tuple[int, list, list] | None = None

    def __len__(self) -> int:
        return len(self.shards)

    def _shard_order(self, epoch: int) -> np.ndarray:
        n = len(self._rows)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def _load(self, shard: int) -> tuple[list, list]:
        if self._cached is None or self._cached[0] != shard:
            table = self.shards.read_shard(shard)
            self._cached = (shard, table.column("tokens").to_pylist(), table.column("prompt_len").to_pylist())
        return self._cached[1], self._cached[2]

    def iterate(self, epoch: int, start: int) -> Iterator[tuple[int, list[int], int]]:
        """(index in the epoch's order, tokens, prompt_len) from ``start``; held-out ones skipped."""
        index = 0
        for shard in self._shard_order(epoch):
            rows = self._rows[shard]
            if index + rows <= start:
                index += rows
                continue
            order = (np.random.default_rng([self.seed, epoch, int(shard)]).permutation(rows)
                     if self.shuffle else np.arange(rows))
            tokens, prompt_lens = self._load(int(shard))
            for i in range(max(0, start - index), rows):
                row = int(order[i])
                if self.keep[0] <= self._first[shard] + row < self.keep[1]:
                    yield index + i, tokens[row], prompt_lens[row]
            index += rows


def pieces(source: SequenceSource, position: DataPosition, seq_len: int,
           epochs: bool = True, first_only: bool = False) -> Iterator[tuple[list[int], int, DataPosition]]:
    """(piece tokens, piece prompt_len, position of this piece) from ``position`` on.

    Sequences longer than seq_len are cut into seq_len chunks (only the first one with ``first_only``).
    Pieces without a target are skipped. With ``epochs`` the stream restarts at the next epoch when it
    runs out; otherwise it ends.
    """
    epoch, start, offset = position.epoch, position.sequence, position.offset
    while True:
        produced = False
        for index, tokens, prompt_len in source.iterate(epoch, start):
            cut = offset if index == start else 0
            stop = min(len(tokens), cut + 1) if first_only else len(tokens)
            for begin in range(cut, stop, seq_len):
                chunk = tokens[begin : begin + seq_len]
                chunk_prompt = max(0, prompt_len - begin)
                if len(chunk) >= MIN_PIECE and chunk_prompt < len(chunk):
                    produced = True
                    yield chunk, chunk_prompt, DataPosition(epoch, index, begin, 0)
        if not epochs:
            return
        if not produced and start == 0 and offset == 0:
            raise ValueError(f"{source.shards.directory}: no sequence has a trainable token")
        epoch, start, offset = epoch + 1, 0, 0


def pack(source: SequenceSource, position: DataPosition, cfg: PackingConfig, n_rows: int | None = None,
         epochs: bool = True, first_only: bool = False) -> tuple[PackedBatch, DataPosition]:
    """Pack ``n_rows`` rows (default cfg.rows) from ``position``; returns them and the next position.

    A piece that does not fit the rest of a row starts the next row (no document is split across
    rows except sequences longer than a row, which are chunked). Without ``epochs`` the batch may
    hold fewer rows when the data runs out.
    """
    n_rows = cfg.rows if n_rows is None else n_rows
    s = cfg.seq_len
    rows: list[list[tuple[list[int], int]]] = []
    current: list[tuple[list[int], int]] = []
    used = 0
    following = None  # position of the first piece not packed
    for chunk, prompt_len, where in pieces(source, position, s, epochs, first_only):
        if used + len(chunk) > s:
            rows.append(current)
            current, used = [], 0
            if len(rows) == n_rows:
                following = where
                break
        current.append((chunk, prompt_len))
        used += len(chunk)
    else:
        if current:
            rows.append(current)
    if following is None:  # data ran out (no epochs): the stream is exhausted
        following = DataPosition(position.epoch + 1, 0, 0, 0)
    batch = _rows_to_batch(rows, s, position.rows)
    return batch, DataPosition(following.epoch, following.sequence, following.offset, position.rows + len(rows))


def _rows_to_batch(rows: list[list[tuple[list[int], int]]], seq_len: int, first_row: int) -> PackedBatch:
    b = len(rows)
    tokens = np.full((b, seq_len), PAD_TOKEN, dtype=np.int64)
    doc_ids = np.full((b, seq_len), PAD_DOC, dtype=np.int64)
    positions = np.zeros((b, seq_len), dtype=np.int64)
    target_ok = np.zeros((b, seq_len), dtype=bool)
    for r, row in enumerate(rows):
        at = 0
        for d, (chunk, prompt_len) in enumerate(row):
            n = len(chunk)
            tokens[r, at : at + n] = chunk
            doc_ids[r, at : at + n] = d
            positions[r, at : at + n] = np.arange(n)
            target_ok[r, at + max(1, prompt_len) : at + n] = True
            at += n
    return PackedBatch(
        tokens=torch.from_numpy(tokens),
        doc_ids=torch.from_numpy(doc_ids),
        positions=torch.from_numpy(positions),
        target_ok=torch.from_numpy(target_ok),
        row_ids=torch.arange(first_row, first_row + b),
    )
