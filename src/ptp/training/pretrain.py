"""Pretraining a teacher from scratch: a plain Llama with next-token loss on document shards.

Plain Llama so that other speculative-decoding code runs against it unchanged: untied lm_head,
RoPE theta 10000, no attention or MLP bias, head_dim = hidden / heads, a standard ``save_pretrained``
directory (safetensors) with the tokenizer files copied in. Packed rows use the same block-diagonal
masks and per-document positions as distillation. The best checkpoint is chosen by held-out loss.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from ptp.attention import mask_for
from ptp.masks import document_mask
from ptp.training.packing import DataPosition, PackedBatch, PackingConfig, SequenceSource, eval_share, pack
from ptp.training.types import EvalResult, StepOutput

ROPE_THETA = 10000.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json", "chat_template.jinja")


@dataclass(frozen=True)
class TeacherConfig:
    """Architecture of the Llama teacher; vocab_size 0 means "from the tokenizer"."""

    hidden_size: int = 256
    layers: int = 8
    heads: int = 4  # head_dim = hidden_size / heads
    kv_heads: int = 4  # < heads for grouped-query attention
    intermediate_size: int = 704  # SwiGLU width (~2.75 x hidden)
    max_positions: int = 1024  # RoPE positions the model is configured for
    vocab_size: int = 0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        # A teacher for PTP should keep >= 8 layers (a shallower one cannot carry the chained sampling a
        # slot must simulate); smaller models are allowed because the same command trains the separate
        # draft model of the sps baseline.
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must divide by heads {self.heads}, "
                             f"and heads by kv_heads {self.kv_heads}")


PRESETS = {
    "cpu-small": TeacherConfig(),  # ~6-7 M parameters at an 8k vocabulary: trains on a 2-core CPU
    "gpu-medium": TeacherConfig(hidden_size=512, layers=12, heads=8, kv_heads=8, intermediate_size=1408,
                                max_positions=2048),
}


def build_teacher(cfg: TeacherConfig, vocab_size: int, bos: int | None, eos: int | None, pad: int | None,
                  seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised plain Llama (sdpa attention, float32)."""
    vocab = cfg.vocab_size or vocab_size
    if vocab < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab}")
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.hidden_size // cfg.heads, max_position_embeddings=cfg.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA}, attention_bias=False,
        mlp_bias=False, tie_word_embeddings=False, initializer_range=cfg.init_std,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.float32)


def lm_step(model, batch: PackedBatch) -> StepOutput:
    """Summed next-token cross-entropy inside documents (token i is predicted by row i - 1)."""
    hf_model = getattr(model, "module", model)  # unwrapped from DDP: its config names the attention backend
    mask = mask_for(hf_model, document_mask(batch.doc_ids), hf_model.dtype)
    out = model(input_ids=batch.tokens, attention_mask=mask, position_ids=batch.positions, use_cache=False)
    logits = out.logits[:, :-1]  # [B, S-1, V]
    targets = batch.tokens[:, 1:]
    valid = batch.target_ok[:, 1:]
    nll = F.cross_entropy(logits[valid].float(), targets[valid], reduction="sum")
    with torch.no_grad():
        right = (logits[valid].argmax(-1) == targets[valid]).sum()
    return StepOutput(nll, valid.sum().float(), right.float(), batch.num_tokens)


class PretrainTask:
    """A Llama teacher, its document stream and fixed held-out rows (``ptp.training.types.Task``)."""

    def __init__(self, model: LlamaForCausalLM, teacher_cfg: TeacherConfig, packing: PackingConfig,
                 train: SequenceSource, val_batches: list[PackedBatch], tokenizer_dir: Path | None) -> None:
        self.model = model
        self.teacher_cfg = teacher_cfg
        self.packing = packing
        self.train = train
        self.val_batches = val_batches
        self.tokenizer_dir = tokenizer_dir

    def trainable(self) -> LlamaForCausalLM:
        return self.model

    def train_batch(self, position: DataPosition) -> tuple[PackedBatch, DataPosition]:
        return pack(self.train, position, self.packing)

    def step(self, model, batch: PackedBatch) -> StepOutput:
        return lm_step(model, batch.to(self.model.device))

    @torch.no_grad()
    def evaluate(self, reduce: Callable[[torch.Tensor], torch.Tensor], rank: int, world: int) -> EvalResult:
        was_training = self.model.training
        self.model.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.model.device)
        for batch in self.val_batches:
            rows, counts = eval_share(batch, rank, world)
            out = lm_step(self.model, rows.to(self.model.device))
            if counts:
                totals += torch.stack([out.loss_sum.double(), out.count.double(), out.correct.double()])
        self.model.train(was_training)
        nll, count, right = reduce(totals).tolist()
        loss = nll / max(count, 1.0)
        metrics = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_accuracy": right / max(count, 1.0),
                   "val_tokens": count}
        return EvalResult(metrics, -loss)

    def save_model(self, directory: Path, result: EvalResult | None, weights: dict[str, torch.Tensor]) -> None:
        self.model.save_pretrained(directory, state_dict=weights)
        if self.tokenizer_dir is not None:
            copy_tokenizer(self.tokenizer_dir, directory)

    def load_model(self, directory: Path) -> None:
        tensors = load_file(str(Path(directory) / "model.safetensors"))
        self.model.load_state_dict(tensors, strict=True)

    def config_dict(self) -> dict:
        return {"teacher": asdict(self.teacher_cfg), "packing": asdict(self.packing)}


def copy_tokenizer(source: Path, target: Path) -> None:
    """Copy the tokenizer files of ``source`` into ``target``."""
    found = [source / name for name in TOKENIZER_FILES if (source / name).is_file()]
    if not found:
        raise ValueError(f"no tokenizer files in {source} (looked for {TOKENIZER_FILES})")
    for path in found:
        shutil.copy2(path, target / path.name)
