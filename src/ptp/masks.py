"""Attention masks and position ids for decoding calls (DESIGN §2).

A decoding call on top of a KV cache of C entries holds, in this order:
- the verify window: the pending token (last verified, not yet cached) and m unverified drafts,
  causal among themselves, at positions C..C+m;
- hypothesis groups d = 0..m of u-slots: group d assumes the first d drafts will be accepted, so it
  sees the cache, window rows 0..d and its own earlier slots (and itself).
Groups never see each other. Masks are bool, True = may attend.
"""

from __future__ import annotations

import torch


def step_mask(cache_len: int, window_len: int, group_sizes: list[int], device=None) -> torch.Tensor:
    """Mask [1, 1, Q, cache_len + Q] for one call: window_len window rows then the groups."""
    q = window_len + sum(group_sizes)
    allowed = torch.zeros(q, cache_len + q, dtype=torch.bool, device=device)
    allowed[:, :cache_len] = True
    w0 = cache_len
    allowed[:window_len, w0 : w0 + window_len] = torch.tril(
        torch.ones(window_len, window_len, dtype=torch.bool, device=device)
    )
    row = window_len
    for d, size in enumerate(group_sizes):
        if size == 0:
            continue
        allowed[row : row + size, w0 : w0 + d + 1] = True
        start = cache_len + row
        allowed[row : row + size, start : start + size] = torch.tril(
            torch.ones(size, size, dtype=torch.bool, device=device)
        )
        row += size
    return allowed[None, None]


def step_positions(cache_len: int, window_len: int, group_sizes: list[int], slot_shift: int) -> torch.Tensor:
    """Position ids [1, Q]: window at cache_len.., group d slot i at cache_len + d + i + slot_shift.

    slot_shift is 0 for O-PTP (the slot predicting position p sits at p - 1) and 1 for C-PTP (the
    slot carrying u_k sits where token t_k would).
    """
    parts = [torch.arange(cache_len, cache_len + window_len)]
    for d, size in enumerate(group_sizes):
        parts.append(torch.arange(size) + cache_len + d + slot_shift)
    return torch.cat(parts)[None]
