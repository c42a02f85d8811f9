"""Cost of one SmolLM2 teacher call per number of query rows, and where the extra rows' time goes.

For q in QUERY_SIZES, time one cached call (cache of 256 tokens) over q new tokens, for variants of
the linear layers that existing library paths offer:

- ``base``: the model as loaded (``F.linear`` against the (out, in) weight; MKL sgemm);
- ``lm_head-t``: only the lm_head (49152 x 576, 21 % of the weights) as ``x @ W_t`` with a
  contiguous pre-transposed copy of its weight;
- ``mkldnn``: every ``nn.Linear`` prepacked by oneDNN (``torch.utils.mkldnn.to_mkldnn``).

It also checks, per variant, that the first row's logits of a call over q rows equal those of the
call over 1 row (AR and verification must share numerics for the output to stay identical), and how
far the variant's logits are from the base model's.
Minimum over interleaved repeats (robust to a busy neighbour). One thread unless --threads.

    python experiments/cpu_verify_cost/rows_cost.py --json experiments/cpu_verify_cost/rows_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn
from transformers import DynamicCache

from ptp.model import load_teacher
from ptp.teachers import DEFAULT_TEACHER

QUERY_SIZES = (1, 2, 4, 8, 16)


class TransposedLinear(nn.Module):
    """``x @ W_t`` with a contiguous (in, out) copy of an nn.Linear's weight (no bias)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = linear.weight.detach().t().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight_t


def variant(teacher, name: str):
    """The teacher with its linears replaced as ``name`` says (a new module; the base is untouched)."""
    import copy

    if name == "base":
        return teacher
    model = copy.deepcopy(teacher)
    if name == "lm_head-t":
        model.lm_head = TransposedLinear(model.lm_head)
        return model
    if name == "mkldnn":
        from torch.utils import mkldnn

        model.model = mkldnn.to_mkldnn(model.model)
        model.lm_head = mkldnn.to_mkldnn(model.lm_head)
        return model
    raise ValueError(name)


@torch.no_grad()
def call_cost(model, context: torch.Tensor, q: int) -> tuple[float, torch.Tensor]:
    """Seconds of one call over q tokens on a fresh copy of the context's cache, and its last logits."""
    cache = DynamicCache(config=model.config)
    model(input_ids=context, cache=cache, use_cache=True)
    n = context.shape[1]
    tokens = torch.arange(q)[None] + 100
    positions = torch.arange(n, n + q)[None]
    start = time.perf_counter()
    out = model(input_ids=tokens, position_ids=positions, cache=cache, use_cache=True)
    return time.perf_counter() - start, out.logits[0, 0]


@torch.no_grad()
def op_profile(model, context: torch.Tensor, q: int, repeats: int = 3, top: int = 8) -> dict[str, float]:
    """Milliseconds of self CPU time per op (mean over repeats) for a call over q tokens: the top ones."""
    from torch.profiler import ProfilerActivity, profile

    call_cost(model, context, q)  # warm
    totals: dict[str, float] = {}
    for _ in range(repeats):
        cache = DynamicCache(config=model.config)
        model(input_ids=context, cache=cache, use_cache=True)
        n = context.shape[1]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(input_ids=torch.arange(q)[None] + 100, position_ids=torch.arange(n, n + q)[None],
                  cache=cache, use_cache=True)
        for event in prof.key_averages():
            totals[event.key] = totals.get(event.key, 0.0) + event.self_cpu_time_total / 1e3 / repeats
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return {name: round(ms, 2) for name, ms in ranked} | {"total": round(sum(totals.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["base", "lm_head-t", "mkldnn"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--profile", action="store_true", help="also: where the base model's time goes, per op")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = load_teacher(DEFAULT_TEACHER).eval()
    models = {name: variant(teacher, name) for name in args.variants}
    context = torch.randint(teacher.config.vocab_size, (1, 256))
    best = {name: {q: float("inf") for q in QUERY_SIZES} for name in models}
    first_logits = {}
    for r in range(args.repeats):
        for q in QUERY_SIZES:
            for name, model in models.items():
                seconds, logits = call_cost(model, context, q)
                best[name][q] = min(best[name][q], seconds)
                first_logits.setdefault((name, q), logits)
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
    base_logits = first_logits[(args.variants[0], 1)]
    report = {"threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "context": 256,
              "ms": {}, "ratio_to_q1": {}, "row0_max_diff_across_q": {}, "max_diff_vs_base": {}}
    for name in models:
        ms = {q: round(best[name][q] * 1e3, 1) for q in QUERY_SIZES}
        report["ms"][name] = ms
        report["ratio_to_q1"][name] = {q: round(ms[q] / ms[1], 2) for q in QUERY_SIZES}
        own = first_logits[(name, 1)]
        across_q = max((first_logits[(name, q)] - own).abs().max().item() for q in QUERY_SIZES)
        diff = (own - base_logits).abs().max().item()
        report["row0_max_diff_across_q"][name] = across_q
        report["max_diff_vs_base"][name] = diff
        print(f"{name:10s} " + "  ".join(f"q={q}: {ms[q]:6.1f} ms ({ms[q] / ms[1]:.2f}x)" for q in QUERY_SIZES)
              + f"  row-0 |diff| across q {across_q:.1e}, vs base {diff:.1e}")
    if args.profile:
        report["profile_ms"] = {q: op_profile(models[args.variants[0]], context, q) for q in (1, 8)}
        for q, ops in report["profile_ms"].items():
            print(f"q={q}: " + ", ".join(f"{name} {ms:.1f}" for name, ms in ops.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
