"""The training loop: accelerate (CPU, one GPU, DDP; FSDP via ``ptp.training.sharding``), AdamW with
warmup + constant/cosine schedule, gradient accumulation, periodic validation, atomic checkpoints and
resume, CSV/TensorBoard metrics.

It knows nothing about PTP: a ``Task`` (``ptp.training.types``) supplies batches, the loss and the
model files. Progress is reported through ``Callbacks``; the loop never prints.

Every process packs the same global micro-batch of ``rows`` rows and takes its contiguous share, and
the loss is normalised by the global target count, so a run's losses do not depend on the process
count (up to float rounding).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from ptp.attention import ATTENTION_BACKENDS, resolve_backend, set_backend
from ptp.training.metrics import MetricsWriter
from ptp.training.packing import DataPosition
from ptp.training.run_dir import (
    BEST,
    latest_checkpoint,
    load_trainer_state,
    prune,
    restore_rng,
    save_checkpoint,
)
from ptp.training.sharding import (
    SHARDINGS,
    full_optimizer_state,
    is_sharded,
    load_optimizer_state,
    shard_model,
    trainable_weights,
)
from ptp.training.types import EvalResult, Task

SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-4  # peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 100  # linear warmup from 0 over this many optimizer steps
    schedule: str = "constant"  # after warmup: constant, or cosine down to min_lr_ratio * lr at max_steps
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run."""

    out_dir: str = "runs/train"  # checkpoints, metrics.csv, eval.csv, tensorboard/
    max_steps: int = 1000  # optimizer steps
    grad_accum: int = 1  # micro-batches per optimizer step
    log_every: int = 10  # steps between progress reports / metrics.csv rows
    eval_every: int = 100  # steps between validations (each one also checkpoints); 0 = only at the end
    save_every: int = 100  # steps between checkpoints; 0 = only at evaluations and the end
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    max_minutes: float = 0.0  # stop after this much training time (over resumes; cosine ends here too); 0 = none
    mixed_precision: str = "auto"  # auto: bf16 on CUDA, none on CPU; or no / bf16 / fp16
    attention: str = "auto"  # auto: flex_attention on CUDA (Llama-like teachers), sdpa otherwise; or sdpa / flex
    sharding: str = "none"  # none: a whole model per process (DDP); fsdp: shard weights over processes
    resume: bool = False  # continue from out_dir/last if it exists
    tensorboard: bool = True  # also log to out_dir/tensorboard when tensorboard is installed

    def __post_init__(self) -> None:
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.sharding not in SHARDINGS:
            raise ValueError(f"sharding must be one of {SHARDINGS}, got {self.sharding!r}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}")
        for name in ("max_steps", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Progress:
    """A progress report (every ``log_every`` steps)."""

    step: int
    max_steps: int
    loss: float  # mean per-target loss over the reported steps
    accuracy: float  # fraction of targets predicted right
    lr: float
    tokens_per_s: float  # real tokens (all processes) per second of this session
    eta_s: float  # seconds to max_steps at the current pace
    grad_norm: float = 0.0  # mean global gradient norm before clipping (all processes' gradients together)


class Callbacks:
    """Override what you want to show; the loop calls these on the main process only."""

    def on_start(self, step: int, max_steps: int, resumed_from: Path | None) -> None: ...

    def on_progress(self, progress: Progress) -> None: ...

    def on_eval(self, step: int, result: EvalResult, is_best: bool) -> None: ...

    def on_save(self, path: Path) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    steps: int  # optimizer steps done (over resumes)
    best_score: float
    best_step: int
    last_eval: dict[str, float]
    stop_reason: str  # max_steps | patience | max_minutes
    run_dir: Path
    is_main: bool  # this process is the main one (the one that writes and reports)
    processes: int = 1  # processes that trained together
    tokens: int = 0  # real tokens trained on (over resumes), all processes together
    sharded: bool = False  # weights were sharded over them (FSDP)

    def summary(self) -> dict:
        """The fields every training command prints (JSON-able)."""
        return {"steps": self.steps, "stop_reason": self.stop_reason, "best_step": self.best_step,
                "last_eval": self.last_eval, "processes": self.processes, "sharded": self.sharded,
                "tokens": self.tokens}


def lr_at(step: int, cfg: OptimConfig, max_steps: int, time_fraction: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    ``time_fraction`` is the share of a time budget (``max_minutes``) already spent: the cosine decays
    over whichever budget, steps or time, runs out first, so a run stopped by the clock still ends at
    the floor.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    by_steps = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, max(by_steps, time_fraction))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())


@dataclass
class _RunState:
    """Mutable bookkeeping of the loop, stored in checkpoints as JSON."""

    step: int = 0
    position: DataPosition = field(default_factory=DataPosition)
    best_score: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0  # real tokens trained on, all processes together

    def to_dict(self) -> dict:
        return {**asdict(self), "position": self.position.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> _RunState:
        fields = {k: data[k] for k in ("step", "best_score", "best_step", "bad_evals", "elapsed_s")}
        return cls(position=DataPosition.from_dict(data["position"]), tokens=data.get("tokens", 0), **fields)


def train(task: Task, cfg: TrainConfig, optim: OptimConfig, callbacks: Callbacks | None = None,
          accelerator: Accelerator | None = None) -> TrainResult:
    """Run (or resume) training until max_steps, patience or max_minutes; returns a summary."""
    callbacks = callbacks or Callbacks()
    acc = accelerator or make_accelerator(cfg)
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(f"accelerate is configured for {acc.distributed_type.value}; ptp shards by itself: launch "
                         "without --use_fsdp / --use_deepspeed and set train.sharding=fsdp")
    run_dir = Path(cfg.out_dir)
    resumed = latest_checkpoint(run_dir) if cfg.resume else None
    model, wrapped, optimizer, params = _prepare(task, cfg, optim, acc, resumed)
    state = _RunState()
    if resumed is not None:
        saved, opt_state, rng = load_trainer_state(resumed)
        load_optimizer_state(optimizer, opt_state)
        restore_rng(rng)
        state = _RunState.from_dict(saved["run"])
    acc.wait_for_everyone()
    writer = MetricsWriter(run_dir, state.step, cfg.tensorboard) if acc.is_main_process else None
    if acc.is_main_process:
        callbacks.on_start(state.step, cfg.max_steps, resumed)
    last_eval: EvalResult | None = None
    since_report = _StepSums()
    budget_s = cfg.max_minutes * 60  # 0: no time limit
    stop_reason = "max_steps"
    while state.step < cfg.max_steps:
        lr = lr_at(state.step, optim, cfg.max_steps, state.elapsed_s / budget_s if budget_s else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.monotonic()
        sums, grad_norm = _optimizer_step(task, wrapped, optimizer, acc, state, cfg, optim, params)
        seconds = time.monotonic() - t0
        state.step += 1
        state.elapsed_s += seconds
        state.tokens += int(sums[3])
        since_report.add(sums, seconds, grad_norm)
        time_left = max(0.0, budget_s - state.elapsed_s) if budget_s else math.inf
        if acc.is_main_process and (state.step % cfg.log_every == 0 or state.step == cfg.max_steps):
            progress = since_report.report(state.step, cfg.max_steps, lr, time_left)
            writer.log_train(progress, state.elapsed_s)
            callbacks.on_progress(progress)
            since_report = _StepSums()
        out_of_time = time_left == 0.0
        is_eval = (cfg.eval_every and state.step % cfg.eval_every == 0) or state.step == cfg.max_steps or out_of_time
        is_best = False
        if is_eval:
            with acc.autocast():
                last_eval = task.evaluate(lambda t: acc.reduce(t, "sum"), acc.process_index, acc.num_processes)
            is_best = last_eval.score > state.best_score
            if is_best:
                state.best_score, state.best_step, state.bad_evals = last_eval.score, state.step, 0
            else:
                state.bad_evals += 1
            if acc.is_main_process:
                writer.log_eval(state.step, last_eval)
                callbacks.on_eval(state.step, last_eval, is_best)
        patience_hit = cfg.patience > 0 and state.bad_evals >= cfg.patience
        if is_eval or (cfg.save_every and state.step % cfg.save_every == 0) or patience_hit:
            _save(task, model, run_dir, state, optimizer, last_eval, is_best, acc, callbacks, cfg, optim)
        if patience_hit:
            stop_reason = "patience"
            break
        if out_of_time:
            stop_reason = "max_minutes"
            break
    if writer is not None:
        writer.close()
    acc.wait_for_everyone()
    metrics = last_eval.metrics if last_eval else {}
    return TrainResult(state.step, state.best_score, state.best_step, metrics, stop_reason, run_dir,
                       acc.is_main_process, acc.num_processes, state.tokens, is_sharded(model))


def _prepare(task: Task, cfg: TrainConfig, optim: OptimConfig, acc: Accelerator, resumed: Path | None):
    """(model, the module to call for gradients, optimizer, trainable params): weights restored from
    ``resumed``, attention backend set, sharded (FSDP) or wrapped by accelerate (DDP)."""
    model = task.trainable()
    sharding = cfg.sharding == "fsdp" and acc.num_processes > 1
    if not sharding:  # sharded, each unit moves to the device as it is cut: never the whole model at once
        model = model.to(acc.device)
    hf_model = getattr(model, "teacher", model)  # the Hugging Face network (a PTPModel wraps its teacher)
    if isinstance(hf_model, PreTrainedModel):
        set_backend(hf_model, resolve_backend(cfg.attention, hf_model, acc.device))
    if resumed is not None:
        task.load_model(resumed)  # whole weights, before any sharding
    if sharding:
        shard_model(model, hf_model)  # replaces the parameters: the optimizer is built after it
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=(optim.beta1, optim.beta2),
                                  weight_decay=optim.weight_decay)
    if sharding:  # FSDP synchronises gradients itself: no DDP wrapper
        return model, model, acc.prepare(optimizer), params
    wrapped, optimizer = acc.prepare(model, optimizer)
    return model, wrapped, optimizer, params


def _optimizer_step(task: Task, wrapped, optimizer, acc: Accelerator, state: _RunState, cfg: TrainConfig,
                    optim: OptimConfig, params: list) -> tuple[torch.Tensor, float]:
    """grad_accum micro-batches, one optimizer step; returns [loss_sum, count, correct, tokens] (global)
    and the gradient norm before clipping."""
    totals = torch.zeros(4, dtype=torch.float64, device=acc.device)
    for micro in range(cfg.grad_accum):
        batch, state.position = task.train_batch(state.position)
        local = batch.share(acc.process_index, acc.num_processes)
        last = micro == cfg.grad_accum - 1
        if is_sharded(wrapped):  # FSDP: reduce-scatter only after the last micro-batch
            wrapped.set_requires_gradient_sync(last)
            sync = nullcontext()
        else:
            sync = nullcontext() if last else acc.no_sync(wrapped)
        with sync, acc.autocast():
            out = task.step(wrapped, local)
            stats = torch.stack([out.loss_sum.detach().double(), out.count.double(), out.correct.double(),
                                 torch.tensor(float(out.tokens), dtype=torch.float64, device=acc.device)])
            stats = acc.reduce(stats, "sum")
            # Normalise by the global count: DDP and FSDP average gradients over processes, hence * world.
            loss = out.loss_sum * acc.num_processes / (stats[1].clamp(min=1) * cfg.grad_accum)
            acc.backward(loss.float())
        totals += stats
    norm = acc.clip_grad_norm_(params, optim.grad_clip if optim.grad_clip > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return totals.cpu(), float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def _save(task: Task, model, run_dir: Path, state: _RunState, optimizer, last_eval: EvalResult | None,
          is_best: bool, acc: Accelerator, callbacks: Callbacks, cfg: TrainConfig, optim: OptimConfig) -> None:
    # Sharded tensors are gathered on every process (collectives), then the main process writes them.
    weights = trainable_weights(model)
    opt_state = full_optimizer_state(optimizer)
    if acc.is_main_process:
        payload = {"run": state.to_dict(), "train": asdict(cfg), "optim": asdict(optim), "task": task.config_dict(),
                   "last_eval": last_eval.metrics if last_eval else None}
        path = save_checkpoint(run_dir, state.step, lambda d: task.save_model(d, last_eval, weights), payload,
                               opt_state, is_best)
        callbacks.on_save(path)
    acc.wait_for_everyone()


class _StepSums:
    """Sums over the steps since the last progress report."""

    def __init__(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64)
        self.seconds = 0.0
        self.grad_norm = 0.0
        self.steps = 0

    def add(self, sums: torch.Tensor, seconds: float, grad_norm: float) -> None:
        self.sums += sums
        self.seconds += seconds
        self.grad_norm += grad_norm
        self.steps += 1

    def report(self, step: int, max_steps: int, lr: float, time_left: float) -> Progress:
        """Means over these steps; the ETA is the nearer of max_steps and the time budget's end."""
        loss_sum, count, correct, tokens = self.sums.tolist()
        per_step = self.seconds / max(1, self.steps)
        return Progress(step, max_steps, loss_sum / max(count, 1.0), correct / max(count, 1.0), lr,
                        tokens / max(self.seconds, 1e-9), min(per_step * (max_steps - step), time_left),
                        self.grad_norm / max(1, self.steps))


def best_dir(run_dir: Path) -> Path:
    """The best checkpoint of a finished run (the ``best`` link), with a clear error if missing."""
    link = Path(run_dir) / BEST
    if not link.is_symlink():
        raise ValueError(f"{run_dir} has no best checkpoint yet")
    return link.resolve()


__all__ = ["Callbacks", "OptimConfig", "Progress", "TrainConfig", "TrainResult", "best_dir", "lr_at", "prune",
           "train"]
