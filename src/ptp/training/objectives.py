"""The PTP training step: one teacher pass, u's inside the teacher intervals, one pass over all windows.

Objectives (``OBJECTIVES``; the math is in ptp.sampling):
- ``o-ptp``: slots see their own u; cross-entropy on the teacher's tokens.
- ``mtp``: the same with u replaced by a constant (the model's mode does that): the control.
- ``c-ptp``: slots see u's up to their own position; KL(Q_{k} || P) to the teacher's processed
  distribution of the slot's target token.
- ``inverse-ar``: C-PTP without a teacher distribution: u_s from the frozen base row s - 1, then each
  u_{s+j} from the model's own slot j - 1 (no gradient, one incremental pass per slot), then one pass
  with gradient and cross-entropy on the data tokens.

Every function takes the model explicitly: ``model`` may be a DDP wrapper (the gradient pass),
``base`` the plain PTPModel (passes without gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ptp.cache import crop_cache
from ptp.masks import document_mask, window_mask
from ptp.model import NO_TOKEN, PTPModel
from ptp.sampling import SamplingConfig, bin_edges, pick, process, u_in_interval
from ptp.training.packing import PackedBatch
from ptp.training.windows import (
    Windows,
    slot_layout,
    slot_positions,
    supported_valid,
    token_intervals,
    window_us,
)

OBJECTIVES = {"o-ptp": "o-ptp", "mtp": "mtp", "c-ptp": "c-ptp", "inverse-ar": "c-ptp"}  # objective -> model mode


def model_mode(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    return OBJECTIVES[objective]


@dataclass(frozen=True)
class TeacherPass:
    """What one teacher pass over a packed batch leaves behind."""

    cache: DynamicCache  # S context entries per layer
    q: torch.Tensor  # [B, S, V] processed teacher distributions; row i is the distribution of t_{i+1}
    left: torch.Tensor  # [B, S] teacher interval of each token t_i (row 0: [0, 1))
    right: torch.Tensor  # [B, S]


@dataclass(frozen=True)
class SlotInputs:
    """The u-slot half of a window pass."""

    u: torch.Tensor  # [B, N, L] u carried by each slot (u_{s+j} at slot j)
    u_next: torch.Tensor  # [B, N, L] u_{s+j+1}: what a C-PTP slot's distribution is picked with
    valid: torch.Tensor  # [B, N, L] bool: the slot has a supported target in its document
    targets: torch.Tensor  # [B, N, L] target token ids


@torch.no_grad()
def teacher_pass(base: PTPModel, batch: PackedBatch, sampling: SamplingConfig) -> TeacherPass:
    """Plain teacher over the packed rows (block-diagonal causal, per-document positions), KV kept."""
    tokens = batch.tokens
    no_slots = torch.zeros_like(tokens, dtype=torch.bool)
    cache = DynamicCache(config=base.teacher.config)
    out = base(tokens, torch.zeros(tokens.shape, device=tokens.device), no_slots, batch.positions,
               attention_mask=document_mask(batch.doc_ids), cache=cache)
    q = process(out.logits, sampling)  # [B, S, V] float32
    left, right = token_intervals(q, tokens, sampling.order)
    return TeacherPass(cache, q, left, right)


def slot_inputs(batch: PackedBatch, windows: Windows, teacher: TeacherPass) -> SlotInputs:
    """u's from the teacher intervals (Beta or uniform z as drawn in ``windows``) and the slot targets."""
    u_all, on_support = window_us(teacher.left, teacher.right, windows)  # [B, N, L+1]
    valid = supported_valid(windows, on_support)
    targets = batch.tokens.gather(1, windows.targets.flatten(1)).view_as(windows.targets)
    return SlotInputs(u_all[:, :, : windows.length], u_all[:, :, 1:], valid, targets)


def window_pass(model, batch: PackedBatch, windows: Windows, u: torch.Tensor, cache,
                first_slot_token: bool = False) -> torch.Tensor:
    """All windows' u-slots in one call on top of the context cache; returns logits [B, N, L, V].

    ``model`` may be wrapped (DDP), so ``first_slot_token`` (its config's) is passed in. The cache
    grows by N * L entries (crop it if it is used again).
    """
    b, n, length = u.shape
    device = u.device
    layout = slot_layout(n, length, device)
    mask = window_mask(batch.doc_ids, windows.starts, layout, layout, first_slot_token)  # [B, 1, NL, S + NL]
    positions = slot_positions(batch, windows).flatten(1)  # [B, NL]
    # A window's first slot sits on the position of the token before s (O-PTP) and may carry it
    # (first_slot_token); the other slots carry none.
    tokens = torch.full((b, n, length), NO_TOKEN, dtype=torch.long, device=device)
    tokens[:, :, 0] = batch.tokens.gather(1, (windows.starts - 1).clamp(min=0))
    tokens = tokens.flatten(1)  # [B, NL]
    is_slot = torch.ones_like(tokens, dtype=torch.bool)
    out = model(tokens, u.flatten(1), is_slot, positions, attention_mask=mask, cache=cache)
    return out.logits.view(b, n, length, -1)


def slot_losses(objective: str, logits: torch.Tensor, slots: SlotInputs, windows: Windows,
                teacher_q: torch.Tensor | None) -> torch.Tensor:
    """Per-slot loss [B, N, L] (0 at invalid slots).

    CE on the target token for o-ptp, mtp and inverse-ar; KL(Q || P) for c-ptp, where Q is the
    teacher's processed distribution of the target token (teacher row target - 1).
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # [B, N, L, V]
    if objective == "c-ptp":
        rows = (windows.targets - 1).clamp(min=0).flatten(1)  # [B, NL]
        q = teacher_q.gather(1, rows[:, :, None].expand(-1, -1, teacher_q.shape[-1])).view_as(logp)
        per_slot = (torch.xlogy(q, q) - q * logp).sum(-1)  # KL(Q || P); 0 log 0 = 0
    else:
        per_slot = -logp.gather(-1, slots.targets[..., None]).squeeze(-1)
    return torch.where(slots.valid, per_slot, torch.zeros_like(per_slot))


def slot_predictions(objective: str, logits: torch.Tensor, u_next: torch.Tensor, order: str = "id") -> torch.Tensor:
    """Draft tokens [B, N, L]: argmax (O-PTP, MTP) or pick(u_{k}, softmax) (C-PTP), as decoding does."""
    if model_mode(objective) != "c-ptp":
        return logits.argmax(-1)
    return pick(u_next, torch.softmax(logits.float(), dim=-1), order)


@torch.no_grad()
def inverse_ar_us(base: PTPModel, batch: PackedBatch, windows: Windows, u_first: torch.Tensor,
                  targets: torch.Tensor, cache: DynamicCache, order: str = "id") -> torch.Tensor:
    """u_s .. u_{s+L-1} [B, N, L] found from the model's own CDFs, one incremental slot pass per j.

    u_first [B, N] is u_s (from the frozen base row s - 1). Slot j (carrying u_{s+j}) gives P_j, the
    distribution of t_{s+j+1} = targets[..., j], and u_{s+j+1} is drawn inside P_j's interval of it.
    The cache is restored to its context length afterwards.
    """
    b, n, length = targets.shape
    device = targets.device
    context = cache.get_seq_length()
    positions = slot_positions(batch, windows)  # [B, N, L]
    us = [u_first]
    for j in range(length - 1):
        win = torch.arange(n, device=device)
        keys = slot_layout(n, j + 1, device)  # cached slots were appended one slot index at a time
        keys = (keys[0].view(n, j + 1).T.flatten(), keys[1].view(n, j + 1).T.flatten())
        mask = window_mask(batch.doc_ids, windows.starts, (win, torch.full_like(win, j)), keys)
        tokens = torch.full((b, n), NO_TOKEN, dtype=torch.long, device=device)
        logits = base(tokens, us[-1], torch.ones_like(tokens, dtype=torch.bool), positions[:, :, j],
                      attention_mask=mask, cache=cache).logits  # [B, N, V]
        left, right = bin_edges(torch.softmax(logits.float(), dim=-1), targets[:, :, j], order)
        us.append(u_in_interval(left, right, windows.z[:, :, j + 1].to(left.dtype)))
    crop_cache(cache, context)
    return torch.stack(us, dim=-1)
