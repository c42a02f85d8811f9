"""The sampling math every part of ptp agrees on.

Terms and notation (the paper's):
- z: raw logits of one position, shape [..., V].
- P, Q: *processed* distributions (temperature, then top-k, then top-p, renormalised). P is the
  drafter's, Q the teacher's.
- F: the CDF of a processed distribution, summed over the tokens in the config's *CDF order*.
  ``order="id"`` (the paper's): ascending token id, F_j = sum_{l<=j} P_l. ``order="argmax"``: the
  most likely token first, then the rest in ascending id order; ``order="sorted"``: by descending
  probability (see ``CDF_ORDERS``).
- u: an auxiliary random number in [0, 1). ``pick(u, P)`` returns the token whose interval of F
  contains u; token t owns ``[F_before(t), F_before(t) + P_t)``.

These are pure functions: no module state, no hidden RNG. Pregeneration, training, verification and
the tests all call them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

# Processed distributions are computed at float32 at least (float64 stays float64).
MIN_CDF_DTYPE = torch.float32

# The order in which tokens are laid out along [0, 1) before inverse-CDF sampling. Any order gives
# exact samples of P; it only changes *which* u picks which token, i.e. what a drafter must learn.
# - "id": ascending token id (the paper). The drafter must locate u among id-ordered bins.
# - "argmax": the most likely token first (ties to the lowest id), then the others in ascending id
#   order. u < max P then means "the teacher's most likely token": the mapping a drafter learns first.
#   Only the argmax moves, so a tiny numerical difference between two forwards can change the layout
#   only when the top two probabilities tie to ~1e-7 (the same rarity class as a u on a bin edge).
# - "sorted": every token by descending probability (ties to the lowest id). Easiest to learn, but any
#   near-tie among kept tokens can reorder the layout between two forwards.
CDF_ORDERS = ("id", "argmax", "sorted")


@dataclass(frozen=True)
class SamplingConfig:
    """How logits become a sampling distribution; stored with every shard and checkpoint."""

    temperature: float = 1.0  # 0 means greedy (one-hot on the argmax, ties to the lowest id)
    top_k: int = 0  # keep the k most likely tokens; 0 disables the filter
    top_p: float = 1.0  # keep the smallest most-likely set with mass >= top_p; 1.0 disables it
    order: str = "id"  # CDF layout along [0, 1): "id" (the paper's), "argmax" (most likely first), "sorted"

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not (0.0 < p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {p!r}")
        if self.order not in CDF_ORDERS:
            raise ValueError(f"order must be one of {CDF_ORDERS}, got {self.order!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def same_distribution(self, other: SamplingConfig) -> bool:
        """Whether both configs process logits into the same distribution (the CDF order aside)."""
        return (self.temperature, self.top_k, self.top_p) == (other.temperature, other.top_k, other.top_p)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SamplingConfig:
        """Inverse of ``to_dict``. A dict without ``order`` was written before orders existed: "id"."""
        unknown = set(data) - {"temperature", "top_k", "top_p", "order"}
        if unknown:
            raise ValueError(f"unknown SamplingConfig fields: {sorted(unknown)}")
        return cls(**{"order": "id", **data})


# The sampled setting of the paper's benchmark protocol (Spec-Bench at T=0.7, top-k 50, top-p 0.95):
# what ``ptp bench`` measures beside greedy, and what teacher samples for training default to.
BENCH_SAMPLING = SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)


def process(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Processed distribution for logits [..., V] under ``cfg``: temperature, top-k, top-p, renormalise.

    Returns probabilities [..., V] in float32 (float64 if the logits are float64).
    """
    dtype = torch.float64 if logits.dtype == torch.float64 else MIN_CDF_DTYPE
    z = logits.to(dtype)  # [..., V]
    if cfg.greedy:
        # torch.argmax returns the first maximal index: ties go to the lowest id.
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).to(dtype)
    z = z / cfg.temperature
    vocab = z.shape[-1]
    if 0 < cfg.top_k < vocab:
        kth = torch.topk(z, cfg.top_k, dim=-1).values[..., -1:]  # [..., 1]
        z = z.masked_fill(z < kth, -math.inf)
    probs = torch.softmax(z, dim=-1)
    if cfg.top_p < 1.0:
        probs = _top_p_filter(probs, cfg.top_p)
    return probs


def _support(probs: torch.Tensor) -> torch.Tensor | None:
    """Ascending ids [..., n] holding every token with mass (a row with fewer may hold some zeros), or
    None when some row has mass everywhere. After top-k only k tokens have mass: working on those
    instead of the whole vocabulary is exact (zeros add nothing to a sum and sort last) and, for a
    49k vocabulary, an order of magnitude cheaper."""
    n = int((probs > 0).sum(-1).max()) if probs.numel() else 0
    if n == 0 or n >= probs.shape[-1]:
        return None
    return torch.topk(probs, n, dim=-1, sorted=False).indices.sort(-1).values


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (never empty); renormalise."""
    # Stable sort so equal probabilities keep id order: the kept set is deterministic.
    support = _support(probs)
    if support is None:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # [..., V]
    else:  # the same stable order, over the tokens with mass only (support is in ascending id order)
        sorted_p, position = torch.sort(probs.gather(-1, support), dim=-1, descending=True, stable=True)
        order = support.gather(-1, position)  # [..., n]
    mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
    keep_sorted = mass_before < top_p
    keep_sorted[..., 0] = True
    keep = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def _check_u(u: torch.Tensor) -> None:
    if u.numel() and (bool((u < 0).any()) or bool((u >= 1).any()) or bool(torch.isnan(u).any())):
        bad = u[(u < 0) | (u >= 1) | torch.isnan(u)].flatten()[0].item()
        raise ValueError(f"u must lie in [0, 1), got {bad!r}")


def _last_positive(probs: torch.Tensor) -> torch.Tensor:
    """Index of the last entry with positive mass, [...]."""
    vocab = probs.shape[-1]
    return vocab - 1 - (probs > 0).flip(-1).to(torch.int8).argmax(-1)


def _check_order(order: str) -> None:
    if order not in CDF_ORDERS:
        raise ValueError(f"order must be one of {CDF_ORDERS}, got {order!r}")


def _layout(probs: torch.Tensor, order: str, compact: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(probs in CDF order [..., V], token id at each CDF position [..., V] or None for id order).

    ``compact``: lay out only the tokens with mass (``_support``), giving [..., n]; the CDF values at
    those tokens are the same (zero-mass tokens own empty intervals), so ``pick`` is unchanged.
    """
    _check_order(order)
    support = _support(probs) if compact else None
    if support is not None:
        laid = probs.gather(-1, support)  # [..., n] in ascending id order
        if order == "id":
            return laid, support
        if order == "sorted":
            position = torch.sort(laid, dim=-1, descending=True, stable=True).indices
            return laid.gather(-1, position), support.gather(-1, position)
        top = laid.argmax(-1, keepdim=True)  # first maximum in ascending id order: the lowest id, as below
        rest = torch.arange(laid.shape[-1] - 1, device=probs.device)
        position = torch.cat([top, rest + (rest >= top)], -1)
        return laid.gather(-1, position), support.gather(-1, position)
    if order == "id":
        return probs, None
    if order == "sorted":
        ids = torch.sort(probs, dim=-1, descending=True, stable=True).indices  # [..., V]
        return probs.gather(-1, ids), ids
    top = probs.argmax(-1, keepdim=True)  # [..., 1]; the first maximum: ties go to the lowest id
    rest = torch.arange(probs.shape[-1] - 1, device=probs.device)  # positions 1.. hold the other ids
    rest = rest + (rest >= top)  # [..., V-1]: ascending ids, skipping the argmax
    ids = torch.cat([top, rest], -1)  # [..., V]
    return probs.gather(-1, ids), ids


def pick(u: torch.Tensor | float, probs: torch.Tensor, order: str = "id") -> torch.Tensor:
    """Inverse-CDF sampling for u [...] and probs [..., V]: the token whose interval contains u [...].

    Intervals are laid out in ``order`` (see ``CDF_ORDERS``). If rounding leaves F_V <= u, the last
    token with positive mass in that layout is returned, so zero-probability tokens are never picked.
    """
    u = torch.as_tensor(u, device=probs.device)
    _check_u(u)
    laid, ids = _layout(probs, order, compact=True)
    cdf = laid.cumsum(-1)  # [..., V] (or [..., n]: the tokens with mass)
    u = u.to(cdf.dtype).unsqueeze(-1)  # [..., 1]
    index = (cdf <= u).sum(-1)  # count of positions with F <= u == first position with F > u
    index = torch.minimum(index, _last_positive(laid))
    return index if ids is None else ids.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def bin_edges(probs: torch.Tensor, tokens: torch.Tensor, order: str = "id") -> tuple[torch.Tensor, torch.Tensor]:
    """Interval ``[left, right)`` of [0, 1) that token t owns, for probs [..., V] and tokens [...].

    The last token with positive mass owns everything up to 1, matching ``pick``'s rounding guard, so
    the intervals partition [0, 1). Returns (left, right), each [...].
    """
    laid, ids = _layout(probs, order)
    index = tokens.long()
    if ids is not None:  # CDF position of each token
        index = (ids == index.unsqueeze(-1)).to(torch.int8).argmax(-1)
    cdf = laid.cumsum(-1)  # [..., V]
    right = cdf.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    # Use the CDF value of the previous position: exactly the edge pick() compares against.
    prev = (index - 1).clamp(min=0)
    left = torch.where(index > 0, cdf.gather(-1, prev.unsqueeze(-1)).squeeze(-1), torch.zeros_like(right))
    right = torch.where(index == _last_positive(laid), torch.ones_like(right), right)
    return left, right


def u_in_interval(left: torch.Tensor, right: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """u = left + z (right - left) for z in [0, 1], kept strictly below ``right`` and always in [0, 1).

    An empty interval (a token without mass) has no valid u: it gets ``left``, or just below 1 when its
    left edge is 1 (zero-mass tokens laid out after all the mass), so that ``pick`` accepts it.
    """
    u = left + z.to(left.dtype) * (right - left)
    below = torch.nextafter(right, torch.zeros_like(right))
    u = torch.maximum(torch.minimum(u, below), left)
    return torch.minimum(u, torch.nextafter(torch.ones_like(u), torch.zeros_like(u)))



@dataclass(frozen=True)
class Verdict:
    """Result of verifying m drafts: ``tokens`` = accepted drafts + the teacher's next pick."""

    accepted: int  # leading drafts equal to the teacher's picks
    tokens: list[int]  # accepted + 1 verified tokens


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
