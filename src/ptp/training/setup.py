"""Building training tasks from configs: data sources, the stored SamplingConfig, models.

The SamplingConfig a drafter is trained at is the one its data was sampled under (the shard
manifest's, for teacher samples); a different temperature, top-k or top-p in the config is an error,
never silently used. For plain documents it is the config's (default: temperature 1, no truncation).
The CDF order is the config's (default ``SamplingConfig().order``), whatever order the samples were
drawn in: the order only decides which u maps to which token, and samples are valid under any.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ptp.checkpoint_format import fingerprint, mismatch_message
from ptp.data.shards import TokenShards
from ptp.model import TRAIN_WINDOW, PTPModel, load_teacher
from ptp.sampling import SamplingConfig
from ptp.training.distill import DistillConfig, DistillTask
from ptp.training.objectives import model_mode
from ptp.training.packing import DataConfig, DataPosition, PackedBatch, PackingConfig, SequenceSource, pack
from ptp.training.pretrain import PretrainTask, TeacherConfig, build_teacher

VAL_SEED = 12345  # fixes which held-out sequences form the validation rows


@dataclass(frozen=True)
class DrafterConfig:
    """The PTP model to train around a frozen teacher."""

    teacher: str = ""  # teacher directory (safetensors) or hub id
    lora_rank: int = 64  # gated LoRA rank
    lora_alpha: float | None = None  # LoRA alpha; None = rank (scaling 1)
    embedding: str = "binary"  # u-embedding feature map: binary | arith | cosine | interp
    window: int = TRAIN_WINDOW  # u-slots per training window (the longest draft)
    init_from: str | None = None  # a saved drafter (same teacher and shape) to start from instead of scratch
    first_slot_token: bool = False  # a window's first slot also carries the token before it (o-ptp, mtp)

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("model.teacher (a teacher directory) is required")


@dataclass(frozen=True)
class DataSources:
    train: SequenceSource
    val_batches: list[PackedBatch]
    manifest: dict


def open_data(cfg: DataConfig, packing: PackingConfig) -> DataSources:
    """Training source (shuffled) and fixed validation batches (at most packing.rows rows each)."""
    train_shards = TokenShards(cfg.train)
    if cfg.val:
        train = SequenceSource(train_shards, packing.shuffle, packing.seed)
        val = SequenceSource(TokenShards(cfg.val), shuffle=True, seed=VAL_SEED)
    else:
        n = len(train_shards)
        if cfg.val_holdout < 1 or cfg.val_holdout >= n:
            raise ValueError(f"data.val_holdout must be in [1, {n - 1}] when data.val is not set, "
                             f"got {cfg.val_holdout}")
        train = SequenceSource(train_shards, packing.shuffle, packing.seed, keep=(0, n - cfg.val_holdout))
        val = SequenceSource(train_shards, shuffle=True, seed=VAL_SEED, keep=(n - cfg.val_holdout, n))
    # A fixed sample of many held-out sequences (the first piece of each), not chunks of one long one.
    rows, _ = pack(val, DataPosition(), packing, n_rows=cfg.val_rows, epochs=False, first_only=True)
    batches = [rows.rows(i, i + packing.rows) for i in range(0, rows.tokens.shape[0], packing.rows)]
    return DataSources(train, batches, train_shards.manifest)


def resolve_sampling(manifest: dict, requested: SamplingConfig | None) -> SamplingConfig:
    """The SamplingConfig to train at (see the module docstring)."""
    stored = manifest.get("sampling")
    if manifest.get("kind") == "teacher-samples" and stored is not None:
        stored_cfg = SamplingConfig.from_dict(stored)
        if requested is not None and not requested.same_distribution(stored_cfg):
            raise ValueError(f"sampling {requested} differs from the config the data was sampled under "
                             f"({stored_cfg}); a drafter must be trained at its data's sampling")
        return requested or replace(stored_cfg, order=SamplingConfig().order)
    return requested or SamplingConfig()


def build_distill_task(model_cfg: DrafterConfig, data_cfg: DataConfig, packing: PackingConfig,
                       distill_cfg: DistillConfig, sampling: SamplingConfig | None) -> DistillTask:
    """Data, the resolved sampling, the teacher (fingerprint-checked against the data) and a fresh drafter."""
    data = open_data(data_cfg, packing)
    resolved = resolve_sampling(data.manifest, sampling)
    source = Path(model_cfg.teacher)
    teacher = load_teacher(source.resolve() if source.exists() else model_cfg.teacher)
    recorded = data.manifest.get("teacher_fingerprint")
    if data.manifest.get("kind") == "teacher-samples" and recorded:
        problem = mismatch_message(recorded, fingerprint(teacher))
        if problem:
            raise ValueError(f"{data_cfg.train} was sampled from a different teacher: {problem}")
    torch.manual_seed(distill_cfg.seed)  # adapter and u-embedding init: the same in every process and run
    model = PTPModel.from_teacher(teacher, mode=model_mode(distill_cfg.objective), lora_rank=model_cfg.lora_rank,
                                  lora_alpha=model_cfg.lora_alpha, embedding=model_cfg.embedding,
                                  sampling=resolved, window=model_cfg.window,
                                  first_slot_token=model_cfg.first_slot_token)
    if model_cfg.init_from:
        model.load_adapter(model_cfg.init_from)
    return DistillTask(model, distill_cfg, packing, data.train, data.val_batches, resolved)


def build_pretrain_task(teacher_cfg: TeacherConfig, data_cfg: DataConfig, packing: PackingConfig,
                        tokenizer, tokenizer_dir: Path | None, seed: int = 0) -> PretrainTask:
    """Document data and a fresh Llama sized to the tokenizer."""
    data = open_data(data_cfg, packing)
    model = build_teacher(teacher_cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                          tokenizer.pad_token_id, seed)
    return PretrainTask(model, teacher_cfg, packing, data.train, data.val_batches, tokenizer_dir)
