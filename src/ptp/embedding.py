"""u-embeddings: the input vector of a u-slot, a function of the auxiliary u in [0, 1).

At a u-slot ``u_embed(u)`` replaces the token embedding. Every feature map is followed
by a learned affine map to the hidden size. Registry keys: ``binary`` (the paper's choice: the
float32 bit pattern of u, MSB first), ``arith`` (the binary expansion of u, the paper's ``[ar]``
features), ``cosine`` (cos(j·pi·u), j = 1..n) and ``interp`` (linear
interpolation between learned knot vectors).
"""

from __future__ import annotations

import math

import torch
from torch import nn

FLOAT32_BITS = 32
FIXED_BITS = 24  # float32 resolution of u in [1/2, 1)
COSINE_FEATURES = 32
INTERP_KNOTS = 16


def binary_features(u: torch.Tensor) -> torch.Tensor:
    """Float32 bit pattern of u as ±1 features, MSB first: [...] -> [..., 32]."""
    bits = u.to(torch.float32).contiguous().view(torch.int32)  # [...]
    shifts = torch.arange(FLOAT32_BITS - 1, -1, -1, device=u.device, dtype=torch.int32)
    on = (bits.unsqueeze(-1) >> shifts) & 1  # [..., 32]
    return on.to(torch.float32) * 2 - 1


def arith_features(u: torch.Tensor) -> torch.Tensor:
    """The binary expansion of u (fixed point, 24 bits, MSB = 1{u >= 1/2}) as ±1 features: [...] -> [..., 24].

    The paper's arithmetic-coding features ``[ar]`` (e_j = j-th bit of u; Table 4's best). Unlike
    the float32 bit pattern, u is an affine function of these features, so thresholds u >= F (CDF
    inversion) are one linear unit away.
    """
    scaled = torch.floor(u.to(torch.float64).clamp(0.0, 1.0 - 2.0**-FIXED_BITS) * 2.0**FIXED_BITS).to(torch.int64)
    shifts = torch.arange(FIXED_BITS - 1, -1, -1, device=u.device, dtype=torch.int64)
    on = (scaled.unsqueeze(-1) >> shifts) & 1  # [..., 24]
    return on.to(torch.float32) * 2 - 1


def cosine_features(u: torch.Tensor) -> torch.Tensor:
    """cos(j·pi·u) for j = 1..32: [...] -> [..., 32]."""
    freqs = torch.arange(1, COSINE_FEATURES + 1, device=u.device, dtype=torch.float32) * math.pi
    return torch.cos(u.to(torch.float32).unsqueeze(-1) * freqs)


def interp_features(u: torch.Tensor) -> torch.Tensor:
    """Hat-function weights on evenly spaced knots over [0, 1]: [...] -> [..., 16]."""
    knots = torch.linspace(0, 1, INTERP_KNOTS, device=u.device)
    width = 1.0 / (INTERP_KNOTS - 1)
    return (1 - (u.to(torch.float32).unsqueeze(-1) - knots).abs() / width).clamp(min=0)


FEATURE_MAPS = {
    "binary": (binary_features, FLOAT32_BITS),
    "arith": (arith_features, FIXED_BITS),
    "cosine": (cosine_features, COSINE_FEATURES),
    "interp": (interp_features, INTERP_KNOTS),
}


class UEmbedding(nn.Module):
    """u [...] -> hidden vector [..., H]: a fixed feature map followed by a learned affine map."""

    def __init__(self, kind: str, hidden_size: int, token_embedding_std: float = 0.02) -> None:
        super().__init__()
        if kind not in FEATURE_MAPS:
            raise ValueError(f"unknown u-embedding {kind!r}; choose one of {sorted(FEATURE_MAPS)}")
        self.kind = kind
        self.features, n_features = FEATURE_MAPS[kind]
        self.proj = nn.Linear(n_features, hidden_size)
        # Scale-match the token embeddings so the frozen layers see inputs of the usual size.
        nn.init.normal_(self.proj.weight, std=token_embedding_std / math.sqrt(n_features))
        nn.init.zeros_(self.proj.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        feats = self.features(u).to(self.proj.weight.dtype)  # [..., F]
        return self.proj(feats)  # [..., H]
