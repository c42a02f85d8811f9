"""Attention masks and position ids for decoding calls.

A decoding call on top of a KV cache of C entries holds, in this order:
- the verify rows: the pending token (last verified, not yet cached) and m unverified drafts,
  causal among themselves, at positions C..C+m;
- hypothesis groups d = 0..m of u-slots: group d assumes the first d drafts will be accepted, so it
  sees the cache, verify rows 0..d and its own earlier slots (and itself).
Groups never see each other. Masks are bool, True = may attend.

With ``first_slot_token`` (a model option) the first slot of a group carries verify row d's token at
row d's position: it *replaces* that row for the group, so the group sees verify rows 0..d-1 only (in
training: a window at s sees its document's tokens before s - 1). With zero adapters the first slot
then computes exactly the teacher's row.
"""

from __future__ import annotations

import torch


def step_mask(cache_len: int, verify_len: int, group_sizes: list[int], device=None,
              first_slot_token: bool = False) -> torch.Tensor:
    """Mask [1, 1, Q, cache_len + Q] for one call: verify_len verify rows then the groups."""
    q = verify_len + sum(group_sizes)
    allowed = torch.zeros(q, cache_len + q, dtype=torch.bool, device=device)
    allowed[:, :cache_len] = True
    w0 = cache_len
    allowed[:verify_len, w0 : w0 + verify_len] = torch.tril(
        torch.ones(verify_len, verify_len, dtype=torch.bool, device=device)
    )
    row = verify_len
    for d, size in enumerate(group_sizes):
        if size == 0:
            continue
        allowed[row : row + size, w0 : w0 + d + (0 if first_slot_token else 1)] = True
        start = cache_len + row
        allowed[row : row + size, start : start + size] = torch.tril(
            torch.ones(size, size, dtype=torch.bool, device=device)
        )
        row += size
    return allowed[None, None]


def step_positions(cache_len: int, verify_len: int, group_sizes: list[int], slot_offset: int) -> torch.Tensor:
    """Position ids [1, Q]: verify rows at cache_len.., group d slot i at cache_len + d + i + slot_offset.

    slot_offset (``ptp.model.slot_offset``) is 0 for O-PTP (the slot carrying u_k predicts t_k and sits
    at t_k's position - 1) and 1 for C-PTP (the slot carrying u_k sits where token t_k would).
    """
    parts = [torch.arange(cache_len, cache_len + verify_len)]
    for d, size in enumerate(group_sizes):
        parts.append(torch.arange(size) + cache_len + d + slot_offset)
    return torch.cat(parts)[None]


# -- training masks --------------------------------------------------------------------------------
# A packed training row holds several documents; doc_ids [B, S] names each token's document
# (PAD_DOC for padding). A *window* n starts at row index s_n: its u-slot j is query (n, j).


PAD_DOC = -1  # doc id of padding tokens


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask [B, 1, S, S] for a packed row: a token sees its own document's past.

    Padding rows see only themselves, so no row is fully masked.
    """
    s = doc_ids.shape[1]
    same = doc_ids[:, :, None] == doc_ids[:, None, :]  # [B, S, S]
    causal = torch.tril(torch.ones(s, s, dtype=torch.bool, device=doc_ids.device))
    eye = torch.eye(s, dtype=torch.bool, device=doc_ids.device)
    pad = (doc_ids == PAD_DOC)[:, :, None]  # [B, S, 1]
    return torch.where(pad, eye, same & causal)[:, None]


def window_mask(
    doc_ids: torch.Tensor,  # [B, S] document of each context token
    starts: torch.Tensor,  # [B, N] row index s_n of window n's first token
    query_slots: tuple[torch.Tensor, torch.Tensor],  # (window [Q], slot index [Q]) of each query
    key_slots: tuple[torch.Tensor, torch.Tensor],  # (window [K], slot index [K]) of each cached/new slot key
    first_slot_token: bool = False,  # the first slot replaces token s - 1: context ends before s - 1
) -> torch.Tensor:
    """Mask [B, 1, Q, S + K] for u-slot queries on top of the S context tokens and K slot keys.

    Slot (n, j) sees the context tokens of its window's document before s_n and the slots (n, j')
    with j' <= j of its own window; windows never see each other. The slot layout is
    the same for every row, so it is given once as (window, index) vectors.
    """
    q_win, q_idx = query_slots
    k_win, k_idx = key_slots
    s = doc_ids.shape[1]
    q_start = starts[:, q_win]  # [B, Q]
    q_doc = doc_ids.gather(1, q_start)  # [B, Q]
    k_pos = torch.arange(s, device=doc_ids.device)
    end = q_start - int(first_slot_token)  # [B, Q]: first context row a slot may not see
    context = (doc_ids[:, None, :] == q_doc[:, :, None]) & (k_pos[None, None, :] < end[:, :, None])  # [B, Q, S]
    own = (k_win[None, :] == q_win[:, None]) & (k_idx[None, :] <= q_idx[:, None])  # [Q, K]
    own = own[None].expand(doc_ids.shape[0], -1, -1)  # [B, Q, K]
    return torch.cat([context, own], dim=-1)[:, None]
