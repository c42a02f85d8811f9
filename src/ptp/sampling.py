"""The sampling math every part of ptp agrees on (DESIGN §1).

Terms and notation (the paper's):
- z: raw logits of one position, shape [..., V].
- P, Q: *processed* distributions (temperature, then top-k, then top-p, renormalised). P is the
  drafter's, Q the teacher's.
- F: the CDF of a processed distribution over token ids in ascending order, F_j = sum_{l<=j} P_l.
- u: an auxiliary random number in [0, 1). ``pick(u, P) = min{j : F_j > u}``; token t owns the
  interval ``[F_{t-1}, F_t)``.

These are pure functions: no module state, no hidden RNG. Pregeneration, training, verification and
the tests all call them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

# Processed distributions are computed at float32 at least (float64 stays float64).
MIN_CDF_DTYPE = torch.float32


@dataclass(frozen=True)
class SamplingConfig:
    """How logits become a sampling distribution; stored with every shard and checkpoint."""

    temperature: float = 1.0  # 0 means greedy (one-hot on the argmax, ties to the lowest id)
    top_k: int = 0  # keep the k most likely tokens; 0 disables the filter
    top_p: float = 1.0  # keep the smallest most-likely set with mass >= top_p; 1.0 disables it

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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SamplingConfig:
        unknown = set(data) - {"temperature", "top_k", "top_p"}
        if unknown:
            raise ValueError(f"unknown SamplingConfig fields: {sorted(unknown)}")
        return cls(**data)


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


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (never empty); renormalise."""
    # Stable sort so equal probabilities keep id order: the kept set is deterministic.
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # [..., V]
    mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
    keep_sorted = mass_before < top_p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def _check_u(u: torch.Tensor) -> None:
    if u.numel() and (bool((u < 0).any()) or bool((u >= 1).any()) or bool(torch.isnan(u).any())):
        bad = u[(u < 0) | (u >= 1) | torch.isnan(u)].flatten()[0].item()
        raise ValueError(f"u must lie in [0, 1), got {bad!r}")


def _last_positive(probs: torch.Tensor) -> torch.Tensor:
    """Index of the last token with positive mass, [...]."""
    vocab = probs.shape[-1]
    return vocab - 1 - (probs > 0).flip(-1).to(torch.int8).argmax(-1)


def pick(u: torch.Tensor | float, probs: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: ``min{j : F_j > u}`` for u [...] and probs [..., V]; returns token ids [...].

    If rounding leaves F_V <= u, the last token with positive mass is returned, so zero-probability
    tokens are never picked.
    """
    u = torch.as_tensor(u, device=probs.device)
    _check_u(u)
    cdf = probs.cumsum(-1)  # [..., V]
    u = u.to(cdf.dtype).unsqueeze(-1)  # [..., 1]
    tokens = (cdf <= u).sum(-1)  # count of j with F_j <= u == min{j : F_j > u}
    return torch.minimum(tokens, _last_positive(probs))


def bin_edges(probs: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval ``[F_{t-1}, F_t)`` that token t owns, for probs [..., V] and tokens [...].

    The last token with positive mass owns everything up to 1, matching ``pick``'s rounding guard, so
    the intervals partition [0, 1). Returns (left, right), each [...].
    """
    tokens = tokens.long()
    cdf = probs.cumsum(-1)  # [..., V]
    right = cdf.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    left = right - probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    # Use the CDF value of the previous id where it exists: exactly the edge pick() compares against.
    prev = (tokens - 1).clamp(min=0)
    left = torch.where(tokens > 0, cdf.gather(-1, prev.unsqueeze(-1)).squeeze(-1), torch.zeros_like(left))
    right = torch.where(tokens == _last_positive(probs), torch.ones_like(right), right)
    return left, right


def u_in_interval(left: torch.Tensor, right: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """u = left + z (right - left) for z in [0, 1], kept strictly below ``right`` (and below 1)."""
    u = left + z.to(left.dtype) * (right - left)
    below = torch.nextafter(right, torch.zeros_like(right))
    return torch.maximum(torch.minimum(u, below), left)

