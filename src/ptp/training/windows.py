"""Training windows over packed rows: where they start, which token each u-slot targets, which u it carries.

Notation (the decoding conventions of ptp.decoding):
- A window of L u-slots starts at row index s (its first token t_s, a predictable token). Slot j
  carries u_{s+j}.
- O-PTP / MTP (slot offset 0): slot j sits at position id pos(s) + j - 1 and predicts t_{s+j}.
- C-PTP (slot offset 1): slot j sits at position id pos(s) + j (where t_{s+j} would be) and predicts
  the distribution of t_{s+j+1}; t_s itself is the teacher's pick at row s - 1.
- The target of slot j is therefore token k = s + j + slot_offset; the slot is *valid* when k lies in the
  window's document (and, once the teacher is known, every token s..k has positive teacher mass).
- u_k = u_in_interval(bin_edges(Q_k, t_k), z) with Q_k the teacher's processed distribution of t_k
  (teacher row k - 1) and z ~ Beta(b, b) in training, U(0, 1) in validation.

All randomness of a row comes from a generator seeded by (seed, stream, row id), so a row gets the
same windows and u's whatever the process count, batch split or resume point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ptp.sampling import bin_edges, u_in_interval
from ptp.training.packing import PackedBatch

TRAIN_STREAM = 0  # generator stream ids: training rows and validation rows never share randomness
EVAL_STREAM = 1
VAL_WINDOW_SEED = 0  # validation windows do not depend on distill.seed: runs with other seeds compare directly
UNIFORM = 1.0  # Beta(1, 1) is uniform: the validation z


@dataclass(frozen=True)
class Windows:
    """N windows of L slots per row (unused windows have no valid slot)."""

    starts: torch.Tensor  # [B, N] row index s of each window's first token (0 if unused)
    targets: torch.Tensor  # [B, N, L] row index of each slot's target token (clamped into the row)
    valid: torch.Tensor  # [B, N, L] bool: the target lies in the window's document
    z: torch.Tensor  # [B, N, L + 1] interval fractions for u_s .. u_{s+L}
    slot_offset: int  # 0: O-PTP/MTP layout, 1: C-PTP layout (``ptp.model.slot_offset``)

    @property
    def length(self) -> int:
        return self.targets.shape[-1]

    def to(self, device) -> Windows:
        return Windows(self.starts.to(device), self.targets.to(device), self.valid.to(device),
                       self.z.to(device), self.slot_offset)


def row_generator(seed: int, stream: int, row_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, row_id])


def choose_windows(batch: PackedBatch, n_windows: int, length: int, slot_offset: int, beta: float,
                   seed: int, stream: int = TRAIN_STREAM) -> Windows:
    """Up to n_windows distinct starts per row, uniform over its predictable tokens, and their z's."""
    b, s = batch.tokens.shape
    starts = np.zeros((b, n_windows), dtype=np.int64)
    used = np.zeros((b, n_windows), dtype=bool)
    z = np.zeros((b, n_windows, length + 1), dtype=np.float64)
    target_ok = batch.target_ok.cpu().numpy()
    for r in range(b):
        rng = row_generator(seed, stream, int(batch.row_ids[r]))
        eligible = np.flatnonzero(target_ok[r])
        count = min(n_windows, len(eligible))
        starts[r, :count] = np.sort(rng.choice(eligible, size=count, replace=False))
        used[r, :count] = True
        z[r] = rng.beta(beta, beta, size=(n_windows, length + 1))
    starts_t = torch.from_numpy(starts)
    targets = starts_t[:, :, None] + torch.arange(length)[None, None, :] + slot_offset  # [B, N, L]
    in_row = targets < s
    targets = targets.clamp(max=s - 1)
    doc = batch.doc_ids.cpu()
    same_doc = doc.gather(1, targets.flatten(1)).view_as(targets) == doc.gather(1, starts_t)[:, :, None]
    valid = in_row & same_doc & torch.from_numpy(used)[:, :, None]
    return Windows(starts_t, targets, valid, torch.from_numpy(z).float(), slot_offset)


def slot_layout(n_windows: int, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(window, slot index) of each query of a full window pass, window-major: [N * L] each."""
    win = torch.arange(n_windows, device=device).repeat_interleave(length)
    idx = torch.arange(length, device=device).repeat(n_windows)
    return win, idx


def slot_positions(batch: PackedBatch, windows: Windows) -> torch.Tensor:
    """Position ids [B, N, L] of the slots: pos(s) + j - 1 (O-PTP) or pos(s) + j (C-PTP)."""
    start_pos = batch.positions.gather(1, windows.starts)  # [B, N]
    j = torch.arange(windows.length, device=start_pos.device)
    return start_pos[:, :, None] + j[None, None, :] + windows.slot_offset - 1


def token_intervals(q: torch.Tensor, tokens: torch.Tensor, order: str = "id") -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher interval [left, right) of every token t_k under Q_k (teacher row k - 1): [B, S] each.

    q: [B, S, V] processed teacher distributions (row i predicts token i + 1), laid out in the sampling's
    CDF ``order``. Index 0 gets [0, 1).
    """
    left, right = bin_edges(q[:, :-1], tokens[:, 1:], order)  # [B, S-1]
    zero = torch.zeros_like(left[:, :1])
    return torch.cat([zero, left], 1), torch.cat([zero + 1, right], 1)


def window_us(left: torch.Tensor, right: torch.Tensor, windows: Windows) -> tuple[torch.Tensor, torch.Tensor]:
    """u_s .. u_{s+L} of every window from the token intervals: (u [B, N, L+1], on_support [B, N, L+1]).

    on_support is False where the token has zero teacher mass (an empty interval: not a teacher sample).
    """
    b, s = left.shape
    idx = windows.starts[:, :, None] + torch.arange(windows.length + 1, device=left.device)  # [B, N, L+1]
    idx = idx.clamp(max=s - 1).flatten(1)
    lo = left.gather(1, idx).view(b, -1, windows.length + 1)
    hi = right.gather(1, idx).view_as(lo)
    return u_in_interval(lo, hi, windows.z.to(lo.dtype)), hi > lo


def supported_valid(windows: Windows, on_support: torch.Tensor) -> torch.Tensor:
    """Slots whose target and every earlier window token are teacher-supported: [B, N, L] bool."""
    length = windows.length
    ok = on_support.to(torch.int64).cumprod(-1).bool()  # [B, N, L+1]: tokens s..s+i all supported
    return windows.valid & ok[:, :, windows.slot_offset : windows.slot_offset + length]
