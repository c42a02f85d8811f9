"""PTPModel: a frozen Hugging Face causal LM (the teacher) plus a drafter: gated LoRA or a feature head.

The one-network drafter (``drafter="lora"``, the paper's) is the teacher itself with gated LoRA
adapters that act only at u-slots. The feature head (``drafter="head"``, ``ptp.head``) is a few
small decoder layers reading the teacher's last hidden states; the teacher then runs hook-free.

Terms:
- u-slot: an input position whose embedding is ``u_embed(u)`` instead of a token embedding; the
  LoRA adapters act only there. Every other position is the teacher, exactly.
- mode ``o-ptp``: the slot carrying u_k sits at position id k-1 and predicts token t_k (one-hot
  target, argmax prediction). ``c-ptp``: the slot carrying u_k sits at position id k (in place of
  t_k) and predicts the distribution of t_{k+1}, which is then picked with u_{k+1}. ``mtp``: o-ptp
  with u replaced by a constant, the independent-prediction control.
- slot offset (``slot_offset``): the slot carrying u_k predicts token t_{k + slot_offset}; 0 in o-ptp
  and mtp, 1 in c-ptp. Every slot sits one position before the token it predicts, so the offset also
  moves the slot's position by one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from ptp.attention import mask_for
from ptp.checkpoint_format import (
    PICKLE_SUFFIXES,
    TEACHER_SUBDIR,
    WEIGHTS_NAME,
    check_teacher,
    fingerprint,
    read_config,
    read_weights,
    write_config,
    write_weights,
)
from ptp.embedding import FEATURE_MAPS, UEmbedding
from ptp.head import FeatureHead, HeadConfig
from ptp.lora import GatedLora, LoraConfig, SlotGate
from ptp.sampling import SamplingConfig
from ptp.teachers import is_teacher_reference, portable_name, resolve_teacher

MODES = ("o-ptp", "c-ptp", "mtp")
DRAFTERS = ("lora", "head")  # one network (teacher + gated LoRA) or a feature head over the teacher's features
CONSTANT_U = 0.5  # the u every slot sees in mtp mode
NO_TOKEN = -1  # token id given at u-slots that carry no token
DEFAULT_WINDOW = 16  # PTPConfig.window of a model built in Python (PTPModel.from_teacher)
TRAIN_WINDOW = 8  # the window ``ptp train`` (DrafterConfig) and ``ptp train-head --window`` give a new drafter
DEFAULT_SLOT_BUDGET = 16  # PQD u-slots per call until ``ptp tune`` measures a machine's best


def check_batch_budgets(pairs: tuple[tuple[int, int], ...]) -> None:
    """(batch size >= 1, budget >= 0) pairs with strictly ascending batch sizes, or ValueError."""
    sizes = [b for b, _ in pairs]
    if any(isinstance(v, bool) or not isinstance(v, int) for pair in pairs for v in pair) or any(
            b < 1 or k < 0 for b, k in pairs) or sizes != sorted(set(sizes)):
        raise ValueError(f"batch_budgets must be (batch size >= 1, budget >= 0) pairs with ascending sizes, "
                         f"got {pairs!r}")


def budget_for(pairs: tuple[tuple[int, int], ...], rows: int) -> int | None:
    """The budget of the largest batch size <= rows (None if there is none)."""
    chosen = None
    for size, budget in pairs:
        if size <= rows:
            chosen = budget
    return chosen


def slot_offset(mode: str) -> int:
    """0: the slot carrying u_k predicts t_k (o-ptp, mtp); 1: it predicts t_{k+1} (c-ptp)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return 1 if mode == "c-ptp" else 0


@dataclass(frozen=True)
class PTPConfig:
    """Everything needed to rebuild a PTPModel around its teacher (the ``ptp`` entry of ptp_config.json).

    ``window`` (checkpoint key ``window``) is the length of a training window: the run of consecutive
    u-slots, starting at one token, that the drafter was trained to fill (``ptp.training.windows``).
    Decoding proposes at most that many drafts per drafter call (draft-verify) or per hypothesis group
    (pqd; an O-PTP group holds one slot more, its first slot predicting the token being verified).
    """

    mode: str = "o-ptp"  # one of MODES
    embedding: str = "binary"  # u-embedding feature map, see ptp.embedding
    lora: LoraConfig = field(default_factory=LoraConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # the drafter was distilled at it
    window: int = DEFAULT_WINDOW  # u-slots per training window; the longest draft a group may propose
    correct_hist: tuple[float, ...] = ()  # validation histogram of leading-correct counts (PQD uses it)
    slot_budget: int = DEFAULT_SLOT_BUDGET  # default PQD u-slots per call (``ptp tune`` measures a machine's best)
    # The first u-slot of a window (or hypothesis group) also carries the embedding of the token before
    # it. It sits at that token's position, so it starts from exactly the teacher's state there (O-PTP
    # and MTP only: a C-PTP slot sits one position later).
    first_slot_token: bool = False
    drafter: str = "lora"  # one of DRAFTERS
    head: HeadConfig = field(default_factory=HeadConfig)  # the feature head's shape (drafter "head")
    draft_len: int = 0  # default draft-verify u-slots per drafter call (``ptp tune``); 0 = the window
    # ``ptp tune --batch-sizes``: (batch size, budget) pairs, ascending. A step decoding B rows together uses
    # the budget of the largest size <= B: pqd u-slots per row, or draft-verify drafts per call; 0 = no
    # drafting (every call verifies one token). Empty: slot_budget / draft_len whatever the batch.
    batch_budgets: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.drafter not in DRAFTERS:
            raise ValueError(f"drafter must be one of {DRAFTERS}, got {self.drafter!r}")
        if self.first_slot_token and self.mode == "c-ptp":
            raise ValueError("first_slot_token needs mode o-ptp or mtp (a C-PTP slot does not sit on the "
                             "position of the token before it)")
        if self.embedding not in FEATURE_MAPS:
            raise ValueError(f"embedding must be one of {sorted(FEATURE_MAPS)}, got {self.embedding!r}")
        for name in ("window", "slot_budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.draft_len, bool) or not isinstance(self.draft_len, int) or self.draft_len < 0:
            raise ValueError(f"draft_len must be an integer >= 0 (0 = the window), got {self.draft_len!r}")
        check_batch_budgets(self.batch_budgets)

    @property
    def slot_offset(self) -> int:
        """0: O-PTP and MTP slots predict the token whose u they carry; 1: C-PTP slots predict the next one."""
        return slot_offset(self.mode)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "embedding": self.embedding,
            "lora": self.lora.to_dict(),
            "sampling": self.sampling.to_dict(),
            "window": self.window,
            "correct_hist": list(self.correct_hist),
            "slot_budget": self.slot_budget,
            "first_slot_token": self.first_slot_token,
            "drafter": self.drafter,
            "head": self.head.to_dict(),
            "draft_len": self.draft_len,
            "batch_budgets": [list(pair) for pair in self.batch_budgets],
        }

    @classmethod
    def from_dict(cls, data: dict) -> PTPConfig:
        return cls(
            mode=data["mode"],
            embedding=data["embedding"],
            lora=LoraConfig(**data["lora"]),
            sampling=SamplingConfig.from_dict(data["sampling"]),
            window=data["window"],
            correct_hist=tuple(float(x) for x in data.get("correct_hist", ())),
            slot_budget=int(data.get("slot_budget", DEFAULT_SLOT_BUDGET)),
            first_slot_token=bool(data.get("first_slot_token", False)),
            drafter=data.get("drafter", "lora"),
            head=HeadConfig.from_dict(data.get("head", {})),
            draft_len=int(data.get("draft_len", 0)),
            batch_budgets=tuple((int(b), int(k)) for b, k in data.get("batch_budgets", ())),
        )


def load_teacher(source: str | os.PathLike | PreTrainedModel, dtype: torch.dtype | None = None):
    """A causal LM from a registry name, a .gguf file, a directory, a hub id or an instance.

    Registry names and .gguf files are converted once (``ptp.teachers``); weights load from
    safetensors only, never a pickle.
    """
    if isinstance(source, PreTrainedModel):
        return source
    reference = portable_name(source) if is_teacher_reference(source) else None
    source = resolve_teacher(source)
    path = Path(source)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        raise ValueError(
            f"{path} has no .safetensors weights"
            + (f" (found pickle files {pickles}; ptp never unpickles weights)" if pickles else "")
        )
    model = AutoModelForCausalLM.from_pretrained(
        str(source), use_safetensors=True, attn_implementation="sdpa", dtype=dtype or torch.float32
    )
    if reference is not None:  # checkpoints record the portable name or .gguf path, not the cache folder
        model.config.name_or_path = model.name_or_path = reference
    return model


class PTPModel(nn.Module):
    """Teacher + gated LoRA + u-embedding. ``forward`` runs one mixed call of token rows and u-slots."""

    def __init__(self, teacher: PreTrainedModel, cfg: PTPConfig, vocab_ids: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.teacher = teacher
        self.teacher.requires_grad_(False)
        if cfg.drafter == "head":  # the teacher stays hook-free; the head drafts from its features
            self.head = FeatureHead(teacher, cfg.head, cfg.embedding, vocab_ids)
        else:
            self.gate = SlotGate()
            self.lora = GatedLora(teacher, cfg.lora, self.gate)
            token_std = float(teacher.get_input_embeddings().weight.float().std())
            self.u_embed = UEmbedding(cfg.embedding, teacher.config.hidden_size, token_std)
        self.to(next(teacher.parameters()).device)

    @property
    def default_method(self) -> str:
        """The fastest decoding method this drafter supports: pqd (one network) or draft-verify (head)."""
        return "draft-verify" if self.is_head else "pqd"

    @property
    def is_head(self) -> bool:
        """True for a feature-head drafter (decoded with draft-verify), False for the one-network kind."""
        return self.cfg.drafter == "head"

    # -- construction and persistence ---------------------------------------------------------
    @classmethod
    def from_teacher(
        cls,
        teacher: str | os.PathLike | PreTrainedModel,
        mode: str = "o-ptp",
        lora_rank: int = 64,
        lora_alpha: float | None = None,
        embedding: str = "binary",
        sampling: SamplingConfig | None = None,
        window: int = DEFAULT_WINDOW,
        first_slot_token: bool = False,
        drafter: str = "lora",
        head: HeadConfig | None = None,
        vocab_ids: torch.Tensor | None = None,
    ) -> PTPModel:
        """Wrap a teacher (registry name, .gguf, path, hub id or PreTrainedModel) with a fresh drafter.

        drafter "lora": gated LoRA adapters in the teacher; "head": a ``FeatureHead`` of shape ``head``
        whose draft vocabulary is ``vocab_ids`` (default: the first ids).
        """
        cfg = PTPConfig(
            mode=mode,
            embedding=embedding,
            lora=LoraConfig(rank=lora_rank, alpha=float(lora_alpha or lora_rank)),
            sampling=sampling or SamplingConfig(),
            window=window,
            first_slot_token=first_slot_token,
            drafter=drafter,
            head=head or HeadConfig(),
        )
        return cls(load_teacher(teacher), cfg, vocab_ids)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter and u-embedding weights only (the teacher is stored by reference)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    @functools.cached_property
    def teacher_fingerprint(self) -> dict:
        """The frozen teacher's fingerprint, computed once (a trainer that shards the model asks first)."""
        return fingerprint(self.teacher)

    def save_pretrained(self, directory: str | os.PathLike, include_teacher: bool = False,
                        tensors: dict[str, torch.Tensor] | None = None,
                        storage_dtype: torch.dtype | None = None) -> None:
        """Write adapter.safetensors + ptp_config.json (and the teacher in teacher/ if asked).

        ``tensors`` replaces this model's own adapter weights (a sharded trainer passes the gathered ones);
        ``storage_dtype`` (e.g. torch.float16) stores floating-point weights smaller; they load back as float32.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        own = self.trainable_state_dict()
        tensors = own if tensors is None else {k: tensors[k] for k in own}
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        if storage_dtype is not None:
            tensors = {k: v.to(storage_dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        write_weights(out, tensors)
        if include_teacher:
            self.teacher.save_pretrained(out / TEACHER_SUBDIR)
        write_config(out, self.cfg.to_dict(), self.teacher_fingerprint,
                     TEACHER_SUBDIR if include_teacher else _source_name(self.teacher))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        teacher: str | os.PathLike | PreTrainedModel | None = None,
    ) -> PTPModel:
        """Load a saved PTPModel; the teacher must match the recorded fingerprint exactly."""
        src = Path(directory)
        meta = read_config(src)
        tensors = read_weights(src)
        if teacher is None:
            recorded = meta.get("teacher_source")
            if not recorded:
                raise ValueError(f"{src} records no teacher: pass teacher=PATH")
            teacher = src / recorded if (src / recorded).exists() else recorded
        teacher_model = load_teacher(teacher)
        check_teacher(src, meta, teacher_model)  # before the adapter hooks go onto the teacher
        model = cls(teacher_model, PTPConfig.from_dict(meta["ptp"]), tensors.get("head.vocab_ids"))
        model._load_trained(src, tensors)
        return model

    def load_adapter(self, directory: str | os.PathLike) -> None:
        """Load a saved drafter's adapter and u-embedding into this model (e.g. to continue training).

        The checkpoint must have been trained for this very teacher, with the same mode, u-embedding,
        LoRA shape and window; this model's config (slot budget, histogram, sampling) is kept.
        """
        src = Path(directory)
        meta = read_config(src)
        theirs = PTPConfig.from_dict(meta["ptp"])
        for name in ("mode", "embedding", "lora", "window", "first_slot_token", "drafter", "head"):
            if getattr(theirs, name) != getattr(self.cfg, name):
                raise ValueError(f"{src} has {name}={getattr(theirs, name)!r}, this model "
                                 f"{getattr(self.cfg, name)!r}")
        check_teacher(src, meta, self.teacher)
        self._load_trained(src, read_weights(src))

    def _load_trained(self, src: Path, tensors: dict[str, torch.Tensor]) -> None:
        expected = self.trainable_state_dict()
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{src / WEIGHTS_NAME} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, value in tensors.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"{key}: saved shape {tuple(value.shape)} != model {tuple(expected[key].shape)}")
        self.load_state_dict(tensors, strict=False)
        if self.is_head:
            self.head.bind(self.teacher)  # the draft rows of the teacher's lm_head for the loaded vocabulary

    # -- the forward call ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.teacher.parameters()).device

    @property
    def max_positions(self) -> int:
        """The teacher's context length in tokens."""
        config = self.teacher.config
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        raise ValueError(f"cannot tell the context length of {type(self.teacher).__name__}")

    @property
    def vocab_size(self) -> int:
        return int(self.teacher.get_input_embeddings().weight.shape[0])

    def slot_u(self, u: torch.Tensor) -> torch.Tensor:
        """The u's the drafter sees: the given ones, or the constant in mtp mode (the control)."""
        return torch.full_like(u, CONSTANT_U) if self.cfg.mode == "mtp" else u

    def embed(self, tokens: torch.Tensor, u: torch.Tensor, is_slot: torch.Tensor) -> torch.Tensor:
        """Input vectors [B, S, H]: token embeddings, replaced by u-embeddings where is_slot.

        With ``first_slot_token``, a slot given a token id (not NO_TOKEN) adds that token's embedding.
        """
        token_vecs = self.teacher.get_input_embeddings()(tokens.clamp(min=0))  # [B, S, H]
        if self.is_head or not bool(is_slot.any()):
            return token_vecs
        u = self.slot_u(u)
        slot_vecs = self.u_embed(u.to(token_vecs.device)).to(token_vecs.dtype)  # [B, S, H]
        if self.cfg.first_slot_token:
            carries = (is_slot & (tokens != NO_TOKEN)).unsqueeze(-1)
            slot_vecs = slot_vecs + torch.where(carries, token_vecs, torch.zeros_like(token_vecs))
        return torch.where(is_slot.unsqueeze(-1), slot_vecs, token_vecs)

    def forward(
        self,
        tokens: torch.Tensor,  # [B, S] token ids; at u-slots the token carried (first_slot_token) or NO_TOKEN
        u: torch.Tensor,  # [B, S] auxiliaries (ignored at token rows)
        is_slot: torch.Tensor,  # [B, S] bool
        position_ids: torch.Tensor,  # [B, S]
        attention_mask: torch.Tensor | None = None,  # [B, 1, S, K] bool (True = may attend) or None
        cache=None,
        logits_to_keep: int = 0,
    ):
        """One call of the network; returns the HF output (``.logits`` [B, S, V], ``.cache``)."""
        if self.is_head and bool(is_slot.any()):
            raise ValueError("a feature-head model has no u-slots in the teacher; its head drafts (draft-verify)")
        if attention_mask is None and bool(is_slot.any()):
            # Slot positions repeat context positions; without a mask HF would guess document breaks.
            raise ValueError("a call with u-slots needs an explicit attention_mask")
        embeds = self.embed(tokens, u, is_slot)
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            attention_mask = mask_for(self.teacher, attention_mask, embeds.dtype)
        if self.is_head:  # the teacher's own computation, also returning its features for the head
            hidden = self.teacher.base_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                             position_ids=position_ids, cache=cache,
                                             use_cache=cache is not None).last_hidden_state  # [B, S, H]
            kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
            return TeacherOutput(self.teacher.get_output_embeddings()(kept), cache, hidden)
        with self.gate.open(is_slot):
            return self.teacher(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
                logits_to_keep=logits_to_keep,
            )


@dataclass
class TeacherOutput:
    """A feature-head model's teacher call: logits, the cache and the features the head reads."""

    logits: torch.Tensor  # [B, S or logits_to_keep, V]
    cache: object
    features: torch.Tensor  # [B, S, H] the teacher's last hidden states, after its final norm


def _source_name(teacher: PreTrainedModel) -> str | None:
    name = getattr(teacher.config, "_name_or_path", "") or getattr(teacher, "name_or_path", "")
    return str(name) or None
