"""Pick the PQD slot budget (or a feature head's draft length) for this machine by measuring it.

On a GPU a call over 64 query tokens costs about as much as one over 1; on a 2-core CPU it does not,
so more slots (or longer drafts to verify) can lose time even when they win tokens.
``tune_slot_budget`` runs the model's method at each candidate on a few prompts (interleaved, same
seeds) and keeps the fastest in tokens/s: PQD's slot budget, or draft-verify's draft length for a
feature-head drafter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

import ptp
from ptp.decoding.step import crop_cache
from ptp.masks import step_mask, step_positions
from ptp.model import PTPModel
from ptp.sampling import SamplingConfig

DEFAULT_CANDIDATES = (2, 4, 6, 8, 12, 16, 24, 32)
COST_QUERY_SIZES = (1, 2, 4, 8, 16, 32, 64)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_cost(model: PTPModel, context_len: int = 256, query_sizes=COST_QUERY_SIZES, repeats: int = 5
                 ) -> dict[int, float]:
    """Median seconds of one decoding call with q query rows (1 token + q-1 u-slots) on a cache of
    ``context_len`` tokens: the price PQD pays for its slots on this machine."""
    cache = DynamicCache(config=model.teacher.config)
    context = torch.randint(model.vocab_size, (1, context_len), device=model.device)
    model(context, torch.zeros(context.shape), torch.zeros_like(context, dtype=torch.bool),
          torch.arange(context_len, device=model.device)[None], cache=cache)
    costs = {}
    for q in query_sizes:
        # A feature head's teacher call verifies q tokens (no u-slots in the teacher).
        sizes = [q - 1] if q > 1 and not model.is_head else []
        tokens = torch.zeros(1, q, dtype=torch.long, device=model.device)
        is_slot = torch.arange(q, device=model.device)[None] >= (q if model.is_head else 1)
        u = torch.rand(1, q, device=model.device)
        if model.is_head:
            positions = torch.arange(context_len, context_len + q, device=model.device)[None]
        else:
            positions = step_positions(context_len, 1, sizes, 0).to(model.device)
        mask = step_mask(context_len, 1, sizes, model.device) if sizes else None
        times = []
        for _ in range(repeats):
            _synchronize(model.device)
            start = time.perf_counter()
            model(tokens, u, is_slot, positions, attention_mask=mask, cache=cache)
            _synchronize(model.device)
            times.append(time.perf_counter() - start)
            crop_cache(cache, context_len)
        costs[q] = sorted(times)[len(times) // 2]
    return costs


@dataclass(frozen=True)
class BudgetTrial:
    budget: int
    tokens: int
    seconds: float
    mat: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def tune_slot_budget(
    model: PTPModel,
    prompts: Sequence[list[int]],
    sampling: SamplingConfig,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    max_new_tokens: int = 64,
    seed: int = 0,
    eos_ids: list[int] | None = None,
    progress: Callable[[str], None] | None = None,
    batch: int = 1,
) -> tuple[int, list[BudgetTrial]]:
    """The fastest budget and every trial; prompts run interleaved over budgets to share the noise.

    The candidates are PQD slot budgets, or draft lengths of draft-verify for a feature-head model;
    0 = no drafting. With ``batch`` > 1, the prompts are decoded ``batch`` at a time (one batch), and
    tokens/s counts every row.
    """
    groups = [list(prompts[i : i + batch]) for i in range(0, len(prompts) - batch + 1, batch)]
    if not groups or not candidates:
        raise ValueError(f"tuning needs at least {batch} prompt(s) and one candidate budget")
    totals = {b: [0, 0.0, 0] for b in candidates}  # tokens, seconds, teacher calls
    method = model.default_method
    ptp.generate(model, prompts[0], 8, sampling, seed, method, eos_token_id=eos_ids)
    for g, group in enumerate(groups):
        seeds = [seed + g * batch + k for k in range(batch)]
        for budget in candidates:
            start = time.perf_counter()
            outs = ptp.generate(model, group, max_new_tokens, sampling, seeds, method, eos_token_id=eos_ids,
                                batch_budgets=[(1, budget)])
            totals[budget][1] += time.perf_counter() - start
            totals[budget][0] += sum(len(out.tokens) for out in outs)
            totals[budget][2] += sum(out.teacher_calls for out in outs)
        if progress:
            progress(f"batch {g + 1}/{len(groups)}" if batch > 1 else f"prompt {g + 1}/{len(groups)}")
    trials = [BudgetTrial(b, t, s, t / max(c, 1)) for b, (t, s, c) in totals.items()]
    best = max(trials, key=lambda trial: trial.tokens_per_second)
    return best.budget, trials
