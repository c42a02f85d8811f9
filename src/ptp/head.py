"""The feature-head drafter: a few decoder layers on top of the teacher's own features.

The one-network drafter runs the whole teacher (plus LoRA) at every u-slot, so training costs a full
teacher forward and backward per slot. The feature head instead reads the teacher's last hidden
states ("features", after its final norm: what its lm_head reads), computed anyway by the calls that
verify tokens, and runs only ``layers`` small decoder layers of its own:

- a *context row* at position p carries ``ctx_proj(f_p)``, the teacher's feature after token p;
- the u-slots of a window predicting tokens s, s+1, ... sit at positions s-1, s, ... (the O-PTP
  layout): slot j carries ``u_embed(u_{s+j})``; slot 0 also carries ``fuse([e(t_{s-1}); f_{s-2}])``,
  the teacher's embedding of token s-1 (the token after the last context row) and the last context
  feature (EAGLE's input: what the teacher's next step starts from);
- slots see the context rows before position s-1 and the earlier slots of their own window;
- logits come from the teacher's own (frozen) output embedding restricted to a *draft vocabulary*
  of frequent tokens (the full lm_head is 28 M of SmolLM2's 134.5 M parameters).

The head keeps its own KV cache of context rows during decoding; its drafts are verified by the
teacher with the same u's, so decoding stays lossless whatever the head predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaModel, PreTrainedModel

from ptp.embedding import UEmbedding

NO_DRAFT_ID = -100  # target index of a token outside the draft vocabulary (ignored by the loss)


@dataclass(frozen=True)
class HeadConfig:
    """Shape of a feature head."""

    layers: int = 1  # decoder layers of the head
    draft_vocab: int = 8192  # most frequent tokens the head can propose; 0 = the teacher's whole vocabulary
    intermediate_size: int = 0  # MLP width; 0 = the teacher's

    def __post_init__(self) -> None:
        for name in ("layers", "draft_vocab", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "layers" else 0):
                raise ValueError(f"head {name} must be an integer >= {1 if name == 'layers' else 0}, got {value!r}")

    def to_dict(self) -> dict:
        return {"layers": self.layers, "draft_vocab": self.draft_vocab, "intermediate_size": self.intermediate_size}

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        return cls(**{k: int(v) for k, v in data.items()})


def _teacher_dims(config) -> tuple[int, int, int, int]:
    """(hidden, heads, kv heads, intermediate) of any HF causal LM config."""
    hidden = int(config.hidden_size)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1
    kv = getattr(config, "num_key_value_heads", None) or heads
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return hidden, int(heads), int(kv), int(inter)


def head_body_config(teacher_config, cfg: HeadConfig) -> LlamaConfig:
    """The LlamaConfig of the head's decoder layers (the teacher's width, heads and RoPE)."""
    hidden, heads, kv, inter = _teacher_dims(teacher_config)
    rope = getattr(teacher_config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0}
    return LlamaConfig(
        vocab_size=1, hidden_size=hidden, intermediate_size=cfg.intermediate_size or inter,
        num_hidden_layers=cfg.layers, num_attention_heads=heads, num_key_value_heads=kv,
        max_position_embeddings=int(getattr(teacher_config, "max_position_embeddings", 0)
                                    or getattr(teacher_config, "n_positions", 2048)),
        rms_norm_eps=float(getattr(teacher_config, "rms_norm_eps", 1e-5)), rope_parameters=dict(rope),
        attn_implementation="sdpa", tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
        pad_token_id=None,
    )


class FeatureHead(nn.Module):
    """Context rows (teacher features) and u-slots -> draft logits over the draft vocabulary."""

    def __init__(self, teacher: PreTrainedModel, cfg: HeadConfig, embedding: str,
                 vocab_ids: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = int(teacher.config.hidden_size)
        vocab = int(teacher.get_output_embeddings().weight.shape[0])
        size = cfg.draft_vocab or vocab
        if vocab_ids is None:
            vocab_ids = torch.arange(min(size, vocab))
        if vocab_ids.numel() != min(size, vocab) or int(vocab_ids.max()) >= vocab or int(vocab_ids.min()) < 0:
            raise ValueError(f"draft vocabulary must hold {min(size, vocab)} distinct ids in [0, {vocab})")
        self.register_buffer("vocab_ids", vocab_ids.long().clone())  # [K], saved with the head
        self.ctx_proj = nn.Linear(hidden, hidden)
        nn.init.eye_(self.ctx_proj.weight)  # start by passing the teacher's feature through
        nn.init.zeros_(self.ctx_proj.bias)
        token_std = float(teacher.get_input_embeddings().weight.float().std())
        self.u_embed = UEmbedding(embedding, hidden, token_std)
        self.fuse = nn.Linear(2 * hidden, hidden)  # slot 0: [token embedding; last context feature]
        with torch.no_grad():  # start as the token embedding alone
            self.fuse.weight.zero_()
            self.fuse.weight[:, :hidden] = torch.eye(hidden)
            self.fuse.bias.zero_()
        self.body = LlamaModel(head_body_config(teacher.config, cfg))
        self._init_from_teacher(teacher)
        # Frozen views of the teacher, not saved with the head (see ``bind``).
        self._teacher = [teacher]  # a list: not a submodule, so not in this module's state_dict
        self.bind(teacher)

    @torch.no_grad()
    def _init_from_teacher(self, teacher: PreTrainedModel) -> None:
        """Start from the teacher's last decoder layers and final norm where the shapes agree (Llama-like
        teachers): the head then begins near "one more step of the teacher" instead of at random."""
        layers = getattr(teacher.base_model, "layers", None)
        if layers is not None and len(layers) >= len(self.body.layers):
            for mine, theirs in zip(self.body.layers, layers[-len(self.body.layers):], strict=True):
                ours, src = mine.state_dict(), theirs.state_dict()
                if ours.keys() == src.keys() and all(ours[k].shape == src[k].shape for k in ours):
                    mine.load_state_dict(src)
        norm = getattr(teacher.base_model, "norm", None)
        weight = getattr(norm, "weight", None)
        if weight is not None and weight.shape == self.body.norm.weight.shape:
            self.body.norm.weight.copy_(weight)

    def bind(self, teacher: PreTrainedModel) -> None:
        """Take the draft rows of the teacher's output embedding (after loading ``vocab_ids``)."""
        self._teacher = [teacher]
        weight = teacher.get_output_embeddings().weight.detach()
        self.register_buffer("draft_weight", weight[self.vocab_ids.to(weight.device)].clone(), persistent=False)
        lookup = torch.full((weight.shape[0],), NO_DRAFT_ID, dtype=torch.long, device=weight.device)
        lookup[self.vocab_ids.to(weight.device)] = torch.arange(self.vocab_ids.numel(), device=weight.device)
        self.register_buffer("draft_index", lookup, persistent=False)  # token id -> draft index or NO_DRAFT_ID

    @property
    def body_config(self) -> LlamaConfig:
        return self.body.config

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.body.config)

    def embed_context(self, features: torch.Tensor) -> torch.Tensor:
        """[..., H] teacher features -> head input rows."""
        return self.ctx_proj(features.to(self.ctx_proj.weight.dtype))

    def embed_slots(self, u: torch.Tensor, first_tokens: torch.Tensor, last_features: torch.Tensor) -> torch.Tensor:
        """u [..., L], the token before each window [...] and the last context feature before it [..., H]
        (zeros when there is none) -> slot rows [..., L, H]."""
        rows = self.u_embed(u)  # [..., L, H]
        token = self._teacher[0].get_input_embeddings()(first_tokens.clamp(min=0)).to(rows.dtype)  # [..., H]
        first = self.fuse(torch.cat([token, last_features.to(rows.dtype)], dim=-1))  # [..., H]
        return torch.cat([rows[..., :1, :] + first.unsqueeze(-2), rows[..., 1:, :]], dim=-2)

    def run(self, embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None,
            cache: DynamicCache | None = None) -> torch.Tensor:
        """The decoder layers over [B, Q, H] rows (bool mask [B, 1, Q, K], True = may attend) -> [B, Q, H]."""
        if mask is not None:
            zero = torch.zeros((), dtype=embeds.dtype, device=embeds.device)
            mask = torch.where(mask, zero, torch.finfo(embeds.dtype).min)
        out = self.body(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, cache=cache,
                        use_cache=cache is not None)
        return out.last_hidden_state

    def draft_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., K] logits over the draft vocabulary."""
        return hidden @ self.draft_weight.to(hidden.dtype).T

    def full_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., V] logits, -inf outside the draft vocabulary (what a Drafter reads)."""
        draft = self.draft_logits(hidden)
        full = draft.new_full((*draft.shape[:-1], self.draft_index.numel()), -math.inf)
        return full.index_copy_(-1, self.vocab_ids.to(draft.device), draft)


def frequent_tokens(counts: torch.Tensor, size: int, always: list[int] = ()) -> torch.Tensor:
    """The ``size`` most frequent token ids (ties: lower id), ``always`` included, sorted ascending."""
    score = counts.double().clone()
    score[list(always)] = math.inf
    order = torch.argsort(-score, stable=True)
    return torch.sort(order[:size]).values
