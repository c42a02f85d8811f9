"""Training: distilling PTP drafters (o-ptp, c-ptp, mtp control, inverse-ar) and pretraining teachers.

Modules: ``packing`` (rows from token shards), ``windows`` (window starts, u's), ``objectives`` (the
teacher pass, the window pass, the losses), ``distill`` and ``pretrain`` (tasks), ``loop`` (accelerate,
optimiser, checkpoints), ``checkpoint`` (atomic safetensors + JSON), ``metrics`` (CSV, TensorBoard),
``setup`` (tasks from configs). Nothing here imports ``ptp.decoding``.
"""

from ptp.training.distill import DistillConfig, DistillTask, distill_step
from ptp.training.loop import Callbacks, OptimConfig, Progress, TrainConfig, TrainResult, lr_at, train
from ptp.training.packing import DataConfig, DataPosition, PackedBatch, PackingConfig, SequenceSource, pack
from ptp.training.pretrain import PRESETS, PretrainTask, TeacherConfig, build_teacher
from ptp.training.setup import DrafterConfig, build_distill_task, build_pretrain_task, open_data
from ptp.training.types import EvalResult, StepOutput

__all__ = [
    "PRESETS",
    "Callbacks",
    "DataConfig",
    "DataPosition",
    "DistillConfig",
    "DistillTask",
    "DrafterConfig",
    "EvalResult",
    "OptimConfig",
    "PackedBatch",
    "PackingConfig",
    "PretrainTask",
    "Progress",
    "SequenceSource",
    "StepOutput",
    "TeacherConfig",
    "TrainConfig",
    "TrainResult",
    "build_distill_task",
    "build_pretrain_task",
    "build_teacher",
    "distill_step",
    "lr_at",
    "open_data",
    "pack",
    "train",
]
