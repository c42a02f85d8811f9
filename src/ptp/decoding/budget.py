"""PQD slot budget: how many u-slots each hypothesis group gets in the next call.

With drafts of confidences c_0..c_{m-1}, the chance that exactly j are accepted is
A_j = c_0 ⋯ c_{j-1} (1 - c_j) (A_m = c_0 ⋯ c_{m-1}). A group that yields e drafts adds
E[min(C, e)] tokens to the call after next, where C is the drafter's leading-correct count (its
validation histogram). The marginal value of the e-th draft is P(C >= e), which falls with e, so
adding slots greedily by A_j · P(C >= e) per slot maximises sum_j A_j E[min(C, e_j)] exactly.
(The paper's code used the heuristic sum_{n<=b} n·h(n) instead.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_HIST_DECAY = 0.5  # untrained model: assume P(C = c) ∝ 0.5^c over the window


def survival(hist: Sequence[float], window: int) -> list[float]:
    """P(C >= e) for e = 0..window+1 from a histogram over C = 0..; a geometric prior if empty."""
    weights = list(hist) if hist and sum(hist) > 0 else [DEFAULT_HIST_DECAY**c for c in range(window + 1)]
    total = float(sum(weights))
    tail, out = 1.0, []
    for e in range(window + 2):
        out.append(max(tail, 0.0))
        tail -= weights[e] / total if e < len(weights) else 0.0
    return out


def group_probabilities(confidence: torch.Tensor) -> list[float]:
    """A_j, j = 0..m: probability that exactly j of the m drafts are accepted."""
    c = confidence.double().clamp(0, 1).tolist()
    out, prefix = [], 1.0
    for cj in c:
        out.append(prefix * (1 - cj))
        prefix *= cj
    out.append(prefix)
    return out


def allocate_slots(
    confidence: torch.Tensor,  # [m] confidences of the pending drafts
    surv: list[float],  # P(C >= e), from ``survival``
    budget: int,  # u-slots to hand out
    max_group: int,  # cap per group
    slot_offset: int,  # 0 (O-PTP, MTP): a group's first slot predicts the token being verified (no draft)
) -> list[int]:
    """Slots per group d = 0..m, summing to at most ``budget``."""
    probs = group_probabilities(confidence)
    sizes = [0] * len(probs)
    drafts_per = [0] * len(probs)
    spent = 0
    while spent < budget:
        best, best_gain, best_cost = -1, 0.0, 0
        for d, a in enumerate(probs):
            cost = 2 if slot_offset == 0 and sizes[d] == 0 else 1
            if sizes[d] + cost > max_group or spent + cost > budget:
                continue
            e = drafts_per[d] + 1
            gain = a * (surv[e] if e < len(surv) else 0.0) / cost
            if gain > best_gain:
                best, best_gain, best_cost = d, gain, cost
        if best < 0:
            break
        sizes[best] += best_cost
        drafts_per[best] += 1
        spent += best_cost
    return sizes
