"""A KV cache whose rows hold different requests of different lengths (batched decoding).

Hugging Face's ``DynamicCache`` appends every call's keys at the same index for all rows, so rows of
different lengths would need left padding that moves as they grow. ``RowCache`` instead keeps one
buffer per layer, [rows, kv heads, capacity, head dim], and a length per row: a call over some rows
writes row r's new entries at ``lengths[r]``, ``lengths[r] + 1``, ... (its own write offset) and
attends to the first ``max(lengths) + width`` entries of each row under a mask that hides whatever a
row has not verified (``keys_visible``). Cropping a row is setting its length; rows join and leave
between calls. The buffers are zero-filled (masked entries must be finite), grow by doubling, and
are freed when the last row leaves.

The attention layers of any Hugging Face model only call ``update``; a 4-D mask makes them skip their
own mask building, so no ``transformers.Cache`` subclass is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_CAPACITY = 64  # first buffer length (entries per row); doubled as rows grow


@dataclass(frozen=True)
class _Call:
    """Where one call writes: rows [B, 1], entry index [B, width]; keys per row; a slice if rows are consecutive."""

    rows: torch.Tensor
    index: torch.Tensor
    keys: int
    packed: slice | None

    def to(self, device) -> _Call:
        return _Call(self.rows.to(device), self.index.to(device), self.keys, self.packed)


class RowCache:
    """Per-layer KV buffers shared by independent rows, each with its own length."""

    def __init__(self) -> None:
        self.lengths: list[int] = []  # entries per row (rows not in use: 0)
        self._in_use: list[bool] = []
        self._keys: list[torch.Tensor] = []  # per layer [R, kv heads, capacity, head dim]
        self._values: list[torch.Tensor] = []
        self._call: _Call | None = None

    # -- rows ----------------------------------------------------------------------------------
    def add_row(self) -> int:
        """A new empty row (the lowest free index, so busy rows stay packed)."""
        for row, used in enumerate(self._in_use):
            if not used:
                self._in_use[row], self.lengths[row] = True, 0
                return row
        self._in_use.append(True)
        self.lengths.append(0)
        return len(self.lengths) - 1

    def remove_row(self, row: int) -> None:
        """Free a row; with no row left the buffers are released too."""
        self._in_use[row], self.lengths[row] = False, 0
        while self._in_use and not self._in_use[-1]:
            self._in_use.pop()
            self.lengths.pop()
        if not self._in_use:
            self._keys, self._values = [], []

    @property
    def rows(self) -> int:
        """Rows in use."""
        return sum(self._in_use)

    def view(self, row: int) -> RowView:
        return RowView(self, row)

    # -- one call ------------------------------------------------------------------------------
    def begin_call(self, rows: list[int], width: int) -> int:
        """Prepare a call that appends ``width`` entries (real or padding) to each of ``rows``.

        Returns the number of key entries each row attends to in this call: max length + width.
        """
        if not rows or any(not self._in_use[r] for r in rows):
            raise ValueError(f"rows {rows} are not all in use")
        offsets = torch.tensor([self.lengths[r] for r in rows])
        keys = int(offsets.max()) + width
        packed = rows == list(range(rows[0], rows[0] + len(rows)))
        self._call = _Call(torch.tensor(rows)[:, None], offsets[:, None] + torch.arange(width), keys,
                           slice(rows[0], rows[0] + len(rows)) if packed else None)
        return keys

    def end_call(self, rows: list[int], added: list[int]) -> None:
        """Each row keeps its first ``added`` new entries (its real rows; the padding is dropped)."""
        for row, n in zip(rows, added, strict=True):
            self.lengths[row] += n
        self._call = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the call's new keys/values [B, h, width, d] at each row's offset; return [B, h, keys, d]."""
        if self._call is None:
            raise RuntimeError("RowCache.update outside begin_call/end_call")
        call = self._call
        if layer_idx == len(self._keys):
            self._allocate(key_states, value_states)
        self._fit(layer_idx, call.keys, len(self.lengths))
        if call.rows.device != key_states.device:
            self._call = call = call.to(key_states.device)
        k_buf, v_buf = self._keys[layer_idx], self._values[layer_idx]
        k_buf[call.rows, :, call.index] = key_states.transpose(1, 2).to(k_buf.dtype)  # [B, width, h, d]
        v_buf[call.rows, :, call.index] = value_states.transpose(1, 2).to(v_buf.dtype)
        if call.packed is not None:  # consecutive rows: views, no copy
            return k_buf[call.packed, :, : call.keys], v_buf[call.packed, :, : call.keys]
        return k_buf[call.rows[:, 0], :, : call.keys], v_buf[call.rows[:, 0], :, : call.keys]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.lengths, default=0)

    # -- buffers -------------------------------------------------------------------------------
    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        _, heads, _, k_dim = key_states.shape
        v_dim = value_states.shape[-1]
        shape = (len(self.lengths), heads, MIN_CAPACITY)
        self._keys.append(key_states.new_zeros(*shape, k_dim))
        self._values.append(value_states.new_zeros(*shape, v_dim))

    def _fit(self, layer_idx: int, entries: int, rows: int) -> None:
        """Grow a layer's buffers (doubling) to hold ``rows`` rows of ``entries`` entries."""
        for buffers in (self._keys, self._values):
            buf = buffers[layer_idx]
            r, h, cap, d = buf.shape
            if cap >= entries and r >= rows:
                continue
            while cap < entries:
                cap *= 2
            grown = buf.new_zeros(max(r, rows), h, cap, d)
            grown[:r, :, : buf.shape[2]] = buf
            buffers[layer_idx] = grown


class RowView:
    """One row of a RowCache seen as a cache of its own (length and crop, like ``DynamicCache``)."""

    def __init__(self, cache: RowCache, row: int) -> None:
        self.cache, self.row = cache, row

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.cache.lengths[self.row]

    def crop(self, max_length: int) -> None:
        """``DynamicCache.crop`` semantics: a negative value drops that many entries from the end."""
        length = self.get_seq_length()
        self.cache.lengths[self.row] = max(0, length + max_length if max_length < 0 else min(length, max_length))


def keys_visible(lengths: list[int], local: list[torch.Tensor], keys: int, width: int) -> torch.Tensor:
    """The bool mask [B, 1, width, keys] of a RowCache call (True = may attend).

    Row b's query i sees its ``lengths[b]`` cached entries and, among the call's new entries (at
    ``lengths[b] + j``), those allowed by ``local[b][i, j]`` ([q_b, q_b]). A padding query sees only
    its own entry, so no query is fully masked.
    """
    mask = torch.zeros(len(lengths), width, keys, dtype=torch.bool)
    eye = torch.arange(width)
    for b, (length, allowed) in enumerate(zip(lengths, local, strict=True)):
        q = allowed.shape[0]
        mask[b, :q, :length] = True
        mask[b, :q, length : length + q] = allowed
        mask[b, eye[q:], length + eye[q:]] = True
    return mask[:, None]
