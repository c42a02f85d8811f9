"""Training a feature-head drafter on cached teacher features (``ptp.data.features``).

Each step takes a few rows; for each row the head runs once over its context rows (the teacher's
features) and many windows of u-slots at random starts s in the completion. Slot j of a window
predicts token s + j from u_{s..s+j}; its u is drawn inside the teacher's interval of that token
(u = left + z (right - left), z ~ Beta(b, b); b = 1 is uniform, which is also how validation draws
them). The loss is cross-entropy over the draft vocabulary (tokens outside it are skipped), plus
``distill`` x a soft cross-entropy toward the teacher's whole distribution of each target. A window
ends early at a token the teacher could not have picked (teacher-forced rows, ``ptp.data.features``).
No teacher runs during training, so a step costs only the head: a fraction of the one-network
drafter's full teacher forward and backward per slot.

Validation reports, on held-out rows with fixed windows and u's, the loss, each slot's accuracy and
``mat``: 1 + the mean leading run of right drafts in full windows, i.e. the tokens per teacher call
that draft-verify would reach with these drafts.

Mode ``c-ptp`` distils instead: slot j sees u up to s+j-1 and outputs a distribution over the draft
vocabulary, trained towards the teacher's full processed distribution of token s+j (computed from
the stored feature at s+j-1 with the teacher's own lm_head rows, so no teacher runs either); its
draft is pick(u_{s+j}, that distribution), which the teacher accepts when both pick the same token.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ptp.data.features import FeatureRow
from ptp.head import NO_DRAFT_ID
from ptp.model import PTPModel
from ptp.sampling import pick, process
from ptp.training.run_dir import latest_checkpoint, load_trainer_state, restore_rng, save_checkpoint

EVAL_CSV = "eval.csv"


@dataclass(frozen=True)
class HeadTrainConfig:
    """How a feature head is trained; every field has a default that works on a laptop CPU."""

    steps: int = 2000  # optimizer steps
    rows_per_step: int = 4  # rows (prompt + completion) per step
    windows_per_row: int = 32  # windows at random starts per row
    lr: float = 1e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10 %)
    warmup_steps: int = 50
    weight_decay: float = 0.0
    z_beta: float = 1.0  # u = left + z (right - left), z ~ Beta(b, b); 1 = uniform
    grad_clip: float = 1.0
    distill: float = 0.0  # o-ptp / mtp: weight of a soft cross-entropy toward each target's whole distribution
    eval_every: int = 100  # validate and checkpoint every this many steps
    val_windows_per_row: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "rows_per_step", "windows_per_row", "eval_every", "val_windows_per_row"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.lr <= 0 or self.z_beta <= 0:
            raise ValueError("lr and z_beta must be positive")
        if not self.distill >= 0:
            raise ValueError(f"distill must be >= 0, got {self.distill!r}")


@dataclass
class WindowResult:
    loss_sum: torch.Tensor  # summed cross-entropy over valid slots (with grad)
    valid: torch.Tensor  # [N, L] bool: the slot's target exists and is in the draft vocabulary
    correct: torch.Tensor  # [N, L] bool
    target: torch.Tensor  # [N, L] bool: the slot has a target (in the row, the chain up to it unbroken)
    full: torch.Tensor  # [N] bool: every slot of the window has a target
    logits: torch.Tensor  # [N, L, K] draft-vocabulary logits


def window_pass(model: PTPModel, row: FeatureRow, starts: torch.Tensor, z: torch.Tensor,
                distill: float = 0.0) -> WindowResult:
    """The head over one row's context rows and windows starting at ``starts`` [N] (z: [N, L] in [0, 1]).

    ``distill`` > 0 (modes o-ptp and mtp) adds that weight of a soft cross-entropy toward the teacher's
    processed distribution of each target token (what c-ptp trains on alone): every target then teaches
    the whole distribution it was drawn from, not only the token.
    """
    head, window = model.head, z.shape[1]
    device = model.device
    size = row.tokens.numel()
    n = starts.numel()
    ctx_len = int(starts.max()) - 1  # context rows 0..max(s)-2 are the only ones any slot sees
    index = starts[:, None] + torch.arange(window)  # [N, L] target position of each slot
    index_c = index.clamp(max=size - 1)
    # A slot has a target while every token from the window's start to its own lies in the row and is
    # one the teacher could pick (an empty interval breaks the chain: see ``FeatureRow``).
    inside = ((index < size) & (row.right > row.left)[index_c]).to(torch.int64).cumprod(1).bool()
    left, right = row.left[index_c], row.right[index_c]
    u = torch.where(inside, left + z * (right - left), torch.full_like(z, 0.5))
    u = torch.minimum(u, torch.nextafter(right, torch.zeros_like(right))).clamp(0.0, 1.0 - 2**-24)
    # Slot j carries u_{s+j-slot_offset}. O-PTP: u_{s+j}. C-PTP: u_{s+j-1} (slot 0 a constant: the token
    # before it is known).
    slot_u = torch.cat([torch.full_like(u[:, :1], 0.5), u[:, :-1]], 1) if model.cfg.slot_offset else u
    features = row.features.to(device).float()  # [S, H], one copy to the device per row
    ctx = head.embed_context(features[:ctx_len])  # [C, H]
    last = torch.where((starts >= 2)[:, None].to(device), features[(starts - 2).clamp(min=0)],
                       torch.zeros_like(features[:1]))  # [N, H] feature of token s - 2 (zeros if none)
    slots = head.embed_slots(model.slot_u(slot_u.to(device)), row.tokens[starts - 1].to(device), last)  # [N, L, H]
    embeds = torch.cat([ctx, slots.reshape(n * window, -1)])[None]
    positions = torch.cat([torch.arange(ctx_len), (index - 1).reshape(-1)]).to(device)[None]
    q = ctx_len + n * window
    allowed = torch.zeros(q, q, dtype=torch.bool, device=device)
    allowed[:ctx_len, :ctx_len] = torch.tril(torch.ones(ctx_len, ctx_len, dtype=torch.bool, device=device))
    slot_start = (starts - 1).repeat_interleave(window).to(device)  # slot sees context rows < s - 1
    allowed[ctx_len:, :ctx_len] = torch.arange(ctx_len, device=device)[None, :] < slot_start[:, None]
    own = torch.block_diag(*[torch.tril(torch.ones(window, window, dtype=torch.bool))] * n).to(device)
    allowed[ctx_len:, ctx_len:] = own
    hidden = head.run(embeds, positions, allowed[None, None])[0, ctx_len:]  # [N L, H]
    logits = head.draft_logits(hidden)  # [N L, K]
    targets = head.draft_index[row.tokens[index_c].to(device)].reshape(-1)
    targets = torch.where(inside.reshape(-1).to(device), targets, torch.full_like(targets, NO_DRAFT_ID))
    valid = (targets != NO_DRAFT_ID).reshape(n, window)

    def soft_cross_entropy() -> torch.Tensor:
        # The teacher's processed distribution of token s+j, from its stored feature at s+j-1 over the
        # draft vocabulary (no teacher runs), against the head's: summed over the slots that have a target.
        with torch.no_grad():
            teacher = process(features[index_c - 1].reshape(n * window, -1) @ head.draft_weight.T, model.cfg.sampling)
        per_slot = -(teacher * torch.log_softmax(logits, -1).clamp(min=-1e4)).sum(-1)
        return (per_slot * inside.reshape(-1).to(device)).sum()

    if model.cfg.mode == "c-ptp":
        # Distillation alone; the draft is pick(u_{s+j}, the head's distribution).
        loss_sum = soft_cross_entropy()
        picked = pick(u.reshape(-1).to(device), torch.softmax(logits.detach(), -1), model.cfg.sampling.order)
        correct = (picked == targets).reshape(n, window) & valid
        valid = inside.to(device)
    else:
        loss_sum = F.cross_entropy(logits, targets, ignore_index=NO_DRAFT_ID, reduction="sum")
        if distill > 0:
            loss_sum = loss_sum + distill * soft_cross_entropy()
        correct = (logits.argmax(-1) == targets).reshape(n, window) & valid
    return WindowResult(loss_sum, valid, correct, inside.to(device), inside[:, -1].to(device),
                        logits.reshape(n, window, -1))


def _starts(row: FeatureRow, count: int, rng: random.Random) -> torch.Tensor | None:
    """Up to ``count`` distinct window starts at the completion's tokens that have a target (None if none)."""
    first = max(row.prompt_len, 1)
    pool = (torch.nonzero(row.right[first:] > row.left[first:])[:, 0] + first).tolist()  # targets that exist
    if not pool:
        return None
    return torch.tensor(sorted(rng.sample(pool, min(count, len(pool)))))


def _z(shape: tuple[int, int], beta: float, generator: torch.Generator) -> torch.Tensor:
    if beta == 1.0:
        return torch.rand(shape, generator=generator)
    dist = torch.distributions.Beta(torch.tensor(beta), torch.tensor(beta))
    return dist.sample(shape)


@torch.no_grad()
def evaluate(model: PTPModel, rows: Sequence[FeatureRow], windows_per_row: int, window: int,
             seed: int = 1234) -> dict:
    """Held-out loss, per-slot accuracy and draft-verify MAT on fixed windows and u's."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    loss, valid_n = 0.0, 0
    correct = torch.zeros(window)
    counted = torch.zeros(window)
    runs: list[torch.Tensor] = []
    for row in rows:
        starts = _starts(row, windows_per_row, rng)
        if starts is None:
            continue
        z = torch.rand((starts.numel(), window), generator=gen)
        out = window_pass(model, row, starts, z)
        loss += float(out.loss_sum)
        valid_n += int(out.valid.sum())
        correct += out.correct.float().sum(0).cpu()
        counted += out.target.float().sum(0).cpu()
        runs.append(out.correct[out.full].to(torch.int64).cumprod(1).sum(1).cpu())
    lead = torch.cat(runs) if runs else torch.zeros(0)
    hist = torch.bincount(lead, minlength=window + 1).double()
    metrics = {
        "val_loss": loss / max(valid_n, 1),
        "mat": 1.0 + float(lead.float().mean()) if lead.numel() else 1.0,
        **{f"acc_{j}": float(correct[j] / counted[j]) if counted[j] else 0.0 for j in range(window)},
    }
    return {"metrics": metrics, "correct_hist": (hist / hist.sum()).tolist() if hist.sum() else []}


def _lr(step: int, cfg: HeadTrainConfig, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10 % over the steps (or over ``time_progress`` in [0, 1], the
    share of a time budget spent, when that is further along)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = max((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps), time_progress)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_head(model: PTPModel, train_rows: Sequence[FeatureRow], val_rows: Sequence[FeatureRow],
               cfg: HeadTrainConfig, run_dir: str | Path, resume: bool = False,
               progress: Callable[[str], None] | None = None, time_limit_s: float | None = None,
               decay_by_time: bool = False) -> dict:
    """Train ``model.head``; checkpoints (``last`` and ``best`` by validation MAT) and eval.csv in run_dir.

    ``resume`` continues from the run's last checkpoint (same data, same config). ``time_limit_s``
    stops early (after a validation and a checkpoint) once that much wall time has passed; with
    ``decay_by_time`` the learning rate's cosine decay also ends then if that comes before ``cfg.steps``.
    Rows stay where they are (CPU memory); each is copied to ``model.device`` when used.
    """
    if not model.is_head:
        raise ValueError("train_head needs a model with drafter='head'")
    if decay_by_time and not time_limit_s:
        raise ValueError("decay_by_time needs a time limit")
    if not train_rows or not val_rows:
        raise ValueError("need training and validation rows")
    run = Path(run_dir)
    window = model.cfg.window
    params = [p for p in model.head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best, spent, cpu_spent = 0, -1.0, 0.0, 0.0
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    checkpoint = latest_checkpoint(run) if resume else None
    if checkpoint is not None:
        state, opt_state, rng_state = load_trainer_state(checkpoint)
        if state["config"] != asdict(cfg) | {"steps": state["config"]["steps"]}:
            raise ValueError(f"{checkpoint} was trained with another config: {state['config']}")
        model.load_adapter(checkpoint)
        optimizer.load_state_dict(opt_state)
        restore_rng(rng_state)
        step, best, spent, cpu_spent = state["step"], state["best"], state["seconds"], state["cpu_seconds"]
        rng.setstate(_tuple_state(state["python_rng"]))
        gen.manual_seed(cfg.seed + step)
    elif resume and progress:
        progress(f"no checkpoint in {run}: starting fresh")
    run.mkdir(parents=True, exist_ok=True)
    if step == 0:
        (run / EVAL_CSV).unlink(missing_ok=True)
        record = {"train": asdict(cfg), "model": model.cfg.to_dict()}
        if decay_by_time:
            record["lr_decay_seconds"] = time_limit_s
        (run / "config.json").write_text(json.dumps(record, indent=1))
    model.train()
    wall0, cpu0 = time.perf_counter() - spent, time.process_time() - cpu_spent
    loss_avg = None
    result: dict = {}
    while step < cfg.steps:
        spent_share = (time.perf_counter() - wall0) / time_limit_s if decay_by_time else 0.0
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, cfg, spent_share)
        total, count = None, 0
        for row in rng.sample(list(train_rows), min(cfg.rows_per_step, len(train_rows))):
            starts = _starts(row, cfg.windows_per_row, rng)
            if starts is None:
                continue
            out = window_pass(model, row, starts, _z((starts.numel(), window), cfg.z_beta, gen), cfg.distill)
            total = out.loss_sum if total is None else total + out.loss_sum
            count += int(out.valid.sum())
        if total is None or count == 0:
            step += 1
            continue
        loss = total / count
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        loss_avg = value if loss_avg is None else 0.95 * loss_avg + 0.05 * value
        out_of_time = time_limit_s is not None and time.perf_counter() - wall0 >= time_limit_s
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            model.eval()
            result = evaluate(model, val_rows, cfg.val_windows_per_row, window)
            model.train()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            metrics = {"step": step, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                       "train_loss": round(loss_avg, 4), **{k: round(v, 4) for k, v in result["metrics"].items()}}
            _append_csv(run / EVAL_CSV, metrics)
            is_best = result["metrics"]["mat"] > best
            best = max(best, result["metrics"]["mat"])
            model.cfg = _with_hist(model.cfg, result["correct_hist"])
            state = {"step": step, "best": best, "seconds": wall, "cpu_seconds": cpu, "config": asdict(cfg),
                     "python_rng": _list_state(rng.getstate())}
            save_checkpoint(run, step, lambda d: model.save_pretrained(d), state, optimizer.state_dict(), is_best)
            if progress:
                progress(f"step {step}/{cfg.steps}  train loss {loss_avg:.3f}  val loss "
                         f"{result['metrics']['val_loss']:.3f}  MAT {result['metrics']['mat']:.3f}  "
                         f"acc0 {result['metrics']['acc_0']:.3f}  ({wall:.0f} s)")
            if out_of_time:
                break
    model.eval()
    return {"step": step, "best_mat": best, **result.get("metrics", {})}


def _with_hist(cfg, hist: list[float]):
    from dataclasses import replace

    return replace(cfg, correct_hist=tuple(hist)) if hist else cfg


def _append_csv(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _list_state(state) -> list:
    return [state[0], list(state[1]), state[2]]


def _tuple_state(state) -> tuple:
    return (state[0], tuple(state[1]), state[2])
