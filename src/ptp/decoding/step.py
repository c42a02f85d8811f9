"""One decoding call and its verification.

``run_call`` runs the network once over [verify rows | hypothesis groups] on top of the KV cache;
``verify`` turns the teacher logits of the verify rows into the verified tokens; ``head_draft`` runs a feature
head's drafting call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptp.cache import crop_cache
from ptp.decoding.types import Verdict
from ptp.masks import step_mask, step_positions
from ptp.model import NO_TOKEN, PTPModel
from ptp.sampling import SamplingConfig, pick, process
from ptp.ustream import UStream


@dataclass(frozen=True)
class CallLogits:
    """Logits of one call, split by role."""

    teacher: torch.Tensor  # [m + 1, V] teacher logits of the verify rows: after the pending token and each draft
    groups: list[torch.Tensor]  # group d: [b_d, V] drafter logits
    features: torch.Tensor | None = None  # [m + 1, H] the teacher's features of the verify rows (feature heads)


def run_call(
    model: PTPModel,
    cache,
    verify_rows: list[int],  # the pending token, then the m drafts
    group_sizes: list[int],  # u-slots per hypothesis group d = 0..len-1
    first_index: int,  # generated index of the token that follows the pending one
    ustream: UStream,
) -> CallLogits:
    """Run the network once; the cache grows by the call's length (crop it afterwards)."""
    cache_len = cache.get_seq_length()
    verify_len, n_slots = len(verify_rows), sum(group_sizes)
    device = model.device
    # Group d's first slot sits on verify row d's position and may carry its token (first_slot_token).
    slot_tokens = [t for d, size in enumerate(group_sizes) if size for t in [verify_rows[d]] + [NO_TOKEN] * (size - 1)]
    tokens = torch.tensor(verify_rows + slot_tokens, device=device)[None]  # [1, Q]
    is_slot = torch.zeros_like(tokens, dtype=torch.bool)
    is_slot[:, verify_len:] = True
    # Group d slot i carries u_{first_index + d + i}.
    u_parts = [torch.zeros(verify_len)]
    u_parts += [ustream.take(first_index + d, size) for d, size in enumerate(group_sizes) if size]
    u = torch.cat(u_parts).to(device)[None]  # [1, Q]
    positions = step_positions(cache_len, verify_len, group_sizes, model.cfg.slot_offset).to(device)
    # Verify rows alone need no explicit mask (the model builds the usual causal one).
    mask = step_mask(cache_len, verify_len, group_sizes, device, model.cfg.first_slot_token) if n_slots else None
    out = model(tokens, u, is_slot, positions, attention_mask=mask, cache=cache)
    logits = out.logits[0]  # [Q, V]
    groups, row = [], verify_len
    for size in group_sizes:
        groups.append(logits[row : row + size])
        row += size
    features = getattr(out, "features", None)
    return CallLogits(teacher=logits[:verify_len], groups=groups,
                      features=None if features is None else features[0, :verify_len])


def head_draft(model: PTPModel, head_cache, context_features: torch.Tensor, last_feature: torch.Tensor,
               pending: int, cache_len: int, u: torch.Tensor) -> torch.Tensor:
    """One feature-head call: append the new context rows to the head's cache, then draft len(u) tokens.

    context_features [C, H] are the teacher's features at positions head_len..cache_len-1 (head_len =
    what the head has cached), last_feature [H] the one at cache_len - 1 (zeros if none); slot j sits
    at position cache_len + j, slot 0 carrying the pending token and last_feature.
    Returns the slots' logits [len(u), V] (-inf outside the draft vocabulary); the cache keeps the
    context rows only.
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
    ])[None]  # [1, C + n, H]
    positions = torch.cat([torch.arange(head_len, cache_len), torch.arange(n) + cache_len]).to(device)[None]
    allowed = torch.zeros(c + n, cache_len + n, dtype=torch.bool, device=device)
    allowed[:, :head_len] = True
    allowed[:, head_len:] = torch.tril(torch.ones(c + n, c + n, dtype=torch.bool, device=device))
    allowed[c:, head_len : head_len + c] = True  # slots see every context row
    hidden = head.run(embeds, positions, allowed[None, None], head_cache)
    crop_cache(head_cache, cache_len)
    return head.full_logits(hidden[0, c:])


def verify(
    teacher_logits: torch.Tensor,  # [m + 1, V] of the verify rows
    drafts: list[int],  # [m]
    u: torch.Tensor,  # [m + 1]: the u of each verified position
    sampling: SamplingConfig,
) -> Verdict:
    """Teacher picks with the drafts' own u's; accept the longest matching prefix plus one token."""
    teacher = pick(u, process(teacher_logits, sampling), sampling.order)  # [m + 1]
    m = len(drafts)
    if m == 0:
        return Verdict(accepted=0, tokens=[int(teacher[0])])
    proposed = torch.tensor(drafts, device=teacher.device)
    accepted = int((proposed == teacher[:m]).to(torch.int64).cumprod(0).sum())
    return Verdict(accepted=accepted, tokens=teacher[: accepted + 1].tolist())

