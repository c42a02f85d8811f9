"""Gated LoRA: low-rank adapters on every decoder linear layer, active only at u-slots.

The teacher module tree is never modified. Each adapted layer gets a forward hook that adds
``scaling · B(A x)`` to the rows of its output that belong to u-slots; every other row is the
teacher's output untouched, so the context KV cache and the verification logits are the teacher's.
Which rows are u-slots is set for the duration of one forward call with ``SlotGate.open(mask)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class LoraConfig:
    """Adapter shape."""

    rank: int = 64  # r of every adapter
    alpha: float = 64.0  # the update is scaled by alpha / rank

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"lora rank must be an integer >= 1, got {self.rank!r}")
        if not isinstance(self.alpha, int | float) or self.alpha <= 0:
            raise ValueError(f"lora alpha must be > 0, got {self.alpha!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)


class SlotGate:
    """Which rows of the current forward call are u-slots, found once per call for every layer.

    ``rows`` is None (no slots), a slice of the sequence axis (the slots form one contiguous run in
    every row, as in decoding calls and window passes) or an index tuple (anything else).
    """

    def __init__(self) -> None:
        self.rows: slice | tuple[torch.Tensor, torch.Tensor] | None = None

    @contextmanager
    def open(self, mask: torch.Tensor | None) -> Iterator[None]:
        """Activate the adapters at the True rows of ``mask`` [B, S] for the calls inside the block."""
        previous, self.rows = self.rows, _slot_rows(mask)
        try:
            yield
        finally:
            self.rows = previous


def _slot_rows(mask: torch.Tensor | None) -> slice | tuple[torch.Tensor, torch.Tensor] | None:
    if mask is None:
        return None
    columns = mask.any(0).nonzero()[:, 0]  # [n] sequence positions holding a slot in some row
    if columns.numel() == 0:
        return None
    start, stop = int(columns[0]), int(columns[-1]) + 1
    if stop - start == columns.numel() and bool(mask[:, start:stop].all()):
        return slice(start, stop)
    return mask.nonzero(as_tuple=True)


def _io_features(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    in_features, out_features = layer.weight.shape  # Conv1D stores (in, out)
    return in_features, out_features


class LoraPair(nn.Module):
    """One adapter: delta(x) = scaling · B(A x); B starts at zero so the adapter starts as a no-op."""

    def __init__(self, in_features: int, out_features: int, cfg: LoraConfig) -> None:
        super().__init__()
        self.scaling = cfg.scaling
        self.lora_A = nn.Parameter(torch.empty(cfg.rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, cfg.rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unscaled(x) * self.scaling

    def unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """B(A x) without the scaling: two matrix products, no copies (decoding calls are small)."""
        a, b = self.lora_A, self.lora_B
        if a.dtype != x.dtype:
            a, b = a.to(x.dtype), b.to(x.dtype)
        return F.linear(F.linear(x, a), b)


def adaptable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer of the decoder (nn.Linear or GPT-2's Conv1D), excluding the LM head."""
    head = model.get_output_embeddings()
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | Conv1D) and module is not head
    }


def adapter_key(layer_name: str) -> str:
    """ModuleDict-safe key for a dotted module path."""
    return layer_name.replace(".", "__")


class GatedLora(nn.Module):
    """All adapters of one teacher plus the hooks that apply them at u-slot rows."""

    def __init__(self, model: nn.Module, cfg: LoraConfig, gate: SlotGate) -> None:
        super().__init__()
        self.cfg = cfg
        layers = adaptable_layers(model)
        if not layers:
            raise ValueError(f"{type(model).__name__} has no linear layers to adapt")
        self.adapters = nn.ModuleDict(
            {adapter_key(name): LoraPair(*_io_features(layer), cfg) for name, layer in layers.items()}
        )
        self._handles = [
            layer.register_forward_hook(self._make_hook(self.adapters[adapter_key(name)], gate))
            for name, layer in layers.items()
        ]

    @staticmethod
    def _make_hook(adapter: LoraPair, gate: SlotGate):
        def hook(_module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            rows, x = gate.rows, args[0]  # x: [B, S, in], out: [B, S, out]
            if rows is None:
                return out
            if isinstance(rows, slice):
                if rows.start == 0 and rows.stop == out.shape[1]:
                    return out + adapter(x)
                out[:, rows].add_(adapter.unscaled(x[:, rows]), alpha=adapter.scaling)  # out: this layer's own
                return out
            return out.index_put(rows, out[rows] + adapter(x[rows]))

        return hook

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
