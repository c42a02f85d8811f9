"""The u-stream: i.i.d. U[0,1) numbers u_0, u_1, ... fixed by a seed.

u_g drives generated token g (0-based among new tokens) in every decoding method, for the drafter
and the verifier alike, which is what makes all methods produce the same tokens for one seed.
Numbers are drawn in fixed-size chunks so that u_g depends only on (seed, g), never on how many
numbers a method happened to request.
"""

from __future__ import annotations

import torch

CHUNK = 256  # u's drawn per generator call


class UStream:
    """Lazily extended u-stream for one seed; ``take(start, n)`` returns u_start..u_{start+n-1}."""

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._values = torch.empty(0, dtype=torch.float32)

    def take(self, start: int, n: int) -> torch.Tensor:
        """u_start..u_{start+n-1} as a float32 tensor [n]."""
        while self._values.numel() < start + n:
            chunk = torch.rand(CHUNK, generator=self._generator, dtype=torch.float32)
            self._values = torch.cat([self._values, chunk])
        return self._values[start : start + n]
