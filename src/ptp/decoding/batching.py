"""Run the requests of many rows as few padded network calls (``execute``), or one step alone (``drive``).

Requests of the same kind on the same cache run together: row b's q_b new rows are padded to the
call's width, written at its own offset in the ``RowCache`` and masked so that it sees only its own
cache and its own new rows (``keys_visible``). Requests of very different lengths (a prefill next to
one-token steps) go into separate calls, so padding never more than doubles a call's rows.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from ptp.cache import padding_buckets
from ptp.decoding.row_cache import RowCache, keys_visible
from ptp.decoding.step import HeadCall, Request, Result, TeacherCall
from ptp.model import PTPModel

MAX_PADDING = 2.0  # a call's padded rows may be at most this multiple of its real rows


def execute(model: PTPModel, requests: list[Request]) -> list[Result]:
    """Each request's result, computed in as few calls as the padding rule allows."""
    results: list[Result | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        call = request.call
        kind = (type(call), id(request.cache.cache), isinstance(call, TeacherCall) and call.logits)
        groups.setdefault(kind, []).append(i)
    for members in groups.values():
        for bucket in _buckets(members, [len(requests[i].call.positions) for i in members]):
            bucket.sort(key=lambda i: requests[i].cache.row)
            for i, result in zip(bucket, _run([requests[i] for i in bucket], model), strict=True):
                results[i] = result
    return results  # type: ignore[return-value]


def _buckets(members: list[int], sizes: list[int]) -> list[list[int]]:
    """Split requests (sorted by size) so each call's padded rows stay within MAX_PADDING x its real rows."""
    return [[members[k] for k in bucket] for bucket in padding_buckets(sizes, MAX_PADDING)]


@torch.no_grad()
def _run(requests: list[Request], model: PTPModel) -> list[Result]:
    """One padded call over requests of one kind on one RowCache, given in increasing row order."""
    cache: RowCache = requests[0].cache.cache
    rows = [r.cache.row for r in requests]
    sizes = [len(r.call.positions) for r in requests]
    width, batch, device = max(sizes), len(requests), model.device
    positions = torch.zeros(batch, width, dtype=torch.long)
    for b, r in enumerate(requests):
        positions[b, : sizes[b]] = r.call.positions
    lengths = [cache.lengths[row] for row in rows]
    keys = cache.begin_call(rows, width)
    mask = keys_visible(lengths, [r.call.local for r in requests], keys, width).to(device)
    try:
        if isinstance(requests[0].call, HeadCall):
            embeds = requests[0].call.embeds.new_zeros(batch, width, requests[0].call.embeds.shape[-1])
            for b, r in enumerate(requests):
                embeds[b, : sizes[b]] = r.call.embeds
            hidden = model.head.run(embeds, positions.to(device), mask, cache)
            logits = None
        else:
            tokens = torch.zeros(batch, width, dtype=torch.long)
            u, is_slot = torch.zeros(batch, width), torch.zeros(batch, width, dtype=torch.bool)
            for b, r in enumerate(requests):
                tokens[b, : sizes[b]] = torch.tensor(r.call.tokens)
                u[b, : sizes[b]], is_slot[b, : sizes[b]] = r.call.u, r.call.is_slot
            want_logits = requests[0].call.logits
            out = model(tokens.to(device), u.to(device), is_slot.to(device), positions.to(device),
                        attention_mask=mask, cache=cache, logits_to_keep=0 if want_logits else 1)
            logits = out.logits if want_logits else None
            hidden = getattr(out, "features", None)
    except BaseException:
        cache.end_call(rows, [0] * batch)
        raise
    cache.end_call(rows, sizes)
    return [Result(None if logits is None else logits[b, :q], None if hidden is None else hidden[b, :q])
            for b, q in enumerate(sizes)]


def drive(model: PTPModel, step: Generator[Request, Result, object]) -> object:
    """Run one step generator on its own (each request as a call of one row); return its value."""
    try:
        request = next(step)
        while True:
            request = step.send(execute(model, [request])[0])
    except StopIteration as stop:
        return stop.value
