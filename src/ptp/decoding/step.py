"""One decoding call and its verification, written once for a single request and for a batch.

A decoding step is a generator: wherever it needs the network it yields a ``Request`` (one row's
part of a call: its cache row and its new rows) and receives the result. ``ptp.decoding.batching``
runs the requests of every row in the batch together, padded into one call; a lone request is a
batch of one.

``run_call`` asks for one teacher call over [verify rows | hypothesis groups] on top of the row's
cache; ``head_draft`` for a feature head's drafting call. ``ptp.sampling.verify`` turns the teacher
logits of the verify rows into the verified tokens.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import torch

from ptp.cache import crop_cache
from ptp.decoding.row_cache import RowView
from ptp.masks import step_mask, step_positions
from ptp.model import NO_TOKEN, PTPModel
from ptp.ustream import UStream


@dataclass(frozen=True)
class TeacherCall:
    """One row's part of a teacher call: q new rows appended to its cache."""

    tokens: list[int]  # [q] token ids (NO_TOKEN at u-slots that carry none)
    u: torch.Tensor  # [q] the u at each u-slot (ignored at token rows)
    is_slot: torch.Tensor  # [q] bool
    positions: torch.Tensor  # [q] position ids
    local: torch.Tensor  # [q, q] bool: which of the call's new rows each row may see (it sees all its cache)
    logits: bool = True  # False: only the cache and features are wanted (the prefill)


@dataclass(frozen=True)
class HeadCall:
    """One row's part of a feature-head call: q input rows appended to the head's cache."""

    embeds: torch.Tensor  # [q, H]
    positions: torch.Tensor  # [q]
    local: torch.Tensor  # [q, q] bool


@dataclass(frozen=True)
class Request:
    """What a decoding step yields: a call for one cache row."""

    cache: RowView
    call: TeacherCall | HeadCall


@dataclass(frozen=True)
class Result:
    """A request's outputs: teacher logits [q, V] (None if not asked) and features / head states [q, H]."""

    logits: torch.Tensor | None
    hidden: torch.Tensor | None


Step = Generator[Request, Result, object]  # yields requests, receives their results, returns its value


@dataclass(frozen=True)
class CallLogits:
    """Logits of one call, split by role."""

    teacher: torch.Tensor  # [m + 1, V] teacher logits of the verify rows: after the pending token and each draft
    groups: list[torch.Tensor]  # group d: [b_d, V] drafter logits
    features: torch.Tensor | None = None  # [m + 1, H] the teacher's features of the verify rows (feature heads)


def run_call(
    model: PTPModel,
    cache: RowView,
    verify_rows: list[int],  # the pending token, then the m drafts
    group_sizes: list[int],  # u-slots per hypothesis group d = 0..len-1
    first_index: int,  # generated index of the token that follows the pending one
    ustream: UStream,
) -> Generator[Request, Result, CallLogits]:
    """One teacher call (``yield from``); the cache grows by the call's length (crop it afterwards)."""
    cache_len = cache.get_seq_length()
    verify_len = len(verify_rows)
    # Group d's first slot sits on verify row d's position and may carry its token (first_slot_token).
    slot_tokens = [t for d, size in enumerate(group_sizes) if size for t in [verify_rows[d]] + [NO_TOKEN] * (size - 1)]
    tokens = verify_rows + slot_tokens
    is_slot = torch.zeros(len(tokens), dtype=torch.bool)
    is_slot[verify_len:] = True
    # Group d slot i carries u_{first_index + d + i}.
    u_parts = [torch.zeros(verify_len)]
    u_parts += [ustream.take(first_index + d, size) for d, size in enumerate(group_sizes) if size]
    positions = step_positions(cache_len, verify_len, group_sizes, model.cfg.slot_offset)[0]
    local = step_mask(0, verify_len, group_sizes, first_slot_token=model.cfg.first_slot_token)[0, 0]
    out = yield Request(cache, TeacherCall(tokens, torch.cat(u_parts), is_slot, positions, local))
    groups, row = [], verify_len
    for size in group_sizes:
        groups.append(out.logits[row : row + size])
        row += size
    features = None if out.hidden is None else out.hidden[:verify_len]
    return CallLogits(teacher=out.logits[:verify_len], groups=groups, features=features)


def prefill_call(cache: RowView, tokens: list[int]) -> Generator[Request, Result, torch.Tensor | None]:
    """Cache ``tokens`` after what the row holds (no logits); returns their features [len, H]
    (feature-head models) or None."""
    n, start = len(tokens), cache.get_seq_length()
    local = torch.tril(torch.ones(n, n, dtype=torch.bool))
    call = TeacherCall(tokens, torch.zeros(n), torch.zeros(n, dtype=torch.bool), torch.arange(start, start + n), local,
                       logits=False)
    out = yield Request(cache, call)
    return out.hidden


def head_draft(model: PTPModel, head_cache: RowView, context_features: torch.Tensor, last_feature: torch.Tensor,
               pending: int, cache_len: int, u: torch.Tensor) -> Generator[Request, Result, torch.Tensor]:
    """One feature-head call (``yield from``): append the new context rows to the head's cache, then draft
    len(u) tokens.

    context_features [C, H] are the teacher's features at positions head_len..cache_len-1 (head_len =
    what the head has cached), last_feature [H] the one at cache_len - 1 (zeros if none); slot j sits
    at position cache_len + j, slot 0 carrying the pending token and last_feature; slots see every
    context row. Returns the slots' logits [len(u), V] (-inf outside the draft vocabulary); the cache
    keeps the context rows only.
    """
    head = model.head
    head_len, c, n = head_cache.get_seq_length(), context_features.shape[0], u.shape[0]
    if head_len + c != cache_len:
        raise RuntimeError(f"feature head out of step: {head_len} + {c} context rows for a cache of {cache_len}")
    device = model.device
    embeds = torch.cat([
        head.embed_context(context_features.to(device)),
        head.embed_slots(model.slot_u(u.to(device))[None], torch.tensor([pending], device=device),
                         last_feature.to(device)[None])[0],
    ])  # [C + n, H]
    positions = torch.cat([torch.arange(head_len, cache_len), torch.arange(n) + cache_len])
    local = torch.tril(torch.ones(c + n, c + n, dtype=torch.bool))
    out = yield Request(head_cache, HeadCall(embeds, positions, local))
    crop_cache(head_cache, cache_len)
    return head.full_logits(out.hidden[c:])
