"""Which attention kernel a training run uses, and masks in the form that kernel takes.

Every mask in ptp is built as a dense bool tensor [B, 1, Q, K] (True = may attend): the reference
semantics, and what the tests compare against. ``mask_for`` hands it to the model in the form its
attention backend takes:
- ``sdpa`` (CPU, decoding, any model): an additive float mask (0 / dtype min);
- ``flex`` (CUDA training of Llama / Qwen2-like teachers): a ``BlockMask`` whose mask_mod reads the
  same bool tensor, so fully masked blocks (other documents, other windows) are skipped instead of
  computed. flex_attention has no backward on CPU, so training there always uses sdpa.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

ATTENTION_BACKENDS = ("auto", "sdpa", "flex")
_HF_NAMES = {"sdpa": "sdpa", "flex": "flex_attention"}


def resolve_backend(requested: str, model: PreTrainedModel, device: torch.device) -> str:
    """``auto`` -> ``flex`` on CUDA when the model supports it, else ``sdpa``; explicit choices are checked."""
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {requested!r}")
    supported = bool(getattr(model, "_supports_flex_attn", False))
    if requested == "auto":
        return "flex" if device.type == "cuda" and supported else "sdpa"
    if requested == "flex":
        if not supported:
            raise ValueError(f"{type(model).__name__} has no flex_attention support in transformers; "
                             "use train.attention=sdpa")
        if device.type != "cuda":
            raise ValueError("train.attention=flex needs a CUDA device (flex_attention has no backward on "
                             "CPU); use auto or sdpa")
    return requested


def set_backend(model: PreTrainedModel, backend: str) -> None:
    """Switch a Hugging Face model's attention implementation to ``sdpa`` or ``flex``."""
    if model.config._attn_implementation != _HF_NAMES[backend]:
        model.set_attn_implementation(_HF_NAMES[backend])


def uses_flex(model: PreTrainedModel) -> bool:
    return model.config._attn_implementation == "flex_attention"


def mask_for(model: PreTrainedModel, allowed: torch.Tensor, dtype: torch.dtype):
    """A bool mask [B, 1, Q, K] in the form ``model``'s attention takes (see the module docstring)."""
    if uses_flex(model):
        return block_mask(allowed)
    zeros = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zeros, torch.finfo(dtype).min)


def block_mask(allowed: torch.Tensor):
    """A flex_attention ``BlockMask`` equal to the bool mask [B, 1, Q, K] (one head pattern for all heads)."""
    from torch.nn.attention.flex_attention import create_block_mask

    dense = allowed[:, 0]  # [B, Q, K]
    b, q, k = dense.shape

    def mask_mod(batch, head, q_idx, kv_idx):
        return dense[batch, q_idx, kv_idx]

    return create_block_mask(mask_mod, B=b, H=None, Q_LEN=q, KV_LEN=k, device=allowed.device)
