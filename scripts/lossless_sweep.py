"""Lossless sweep: random tiny teachers, prompts, seeds and sampling configs; compare every method to ``ar``.

Writes a JSON summary (cases, tokens, mismatches per method, oracle MAT vs budget) and prints a table.

    .venv/bin/python scripts/lossless_sweep.py --cases 60 --json runs/lossless_sweep.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

import ptp
from ptp.decoding import OracleDrafter
from ptp.testing import FAMILIES, randomize_adapters, tiny_teacher

SAMPLINGS = [
    ptp.SamplingConfig(temperature=0),
    ptp.SamplingConfig(temperature=0.7, top_k=10, top_p=0.9),
    ptp.SamplingConfig(temperature=1.3),
]


def oracle_long_run(budget: int, n: int = 256) -> dict:
    """PQD with an always-right drafter over a long generation: MAT should approach the budget."""
    out = {}
    for mode in ("o-ptp", "c-ptp"):
        model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0), mode=mode, lora_rank=4, window=16).eval()
        sampling = SAMPLINGS[1]
        ref = ptp.generate(model, [1, 2, 3], n, sampling, 0, "ar").tokens
        res = ptp.generate(model, [1, 2, 3], n, sampling, 0, "pqd", slot_budget=budget,
                           drafter=OracleDrafter(model, sampling))
        out[mode] = {"tokens": n, "identical": bool(torch.equal(res.tokens, ref)), "mat": round(res.mat, 3),
                     "teacher_calls": res.teacher_calls}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=12, help="pqd slot budget for the oracle MAT check")
    parser.add_argument("--json", type=Path, default=Path("runs/lossless_sweep.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    totals = {"cases": 0, "tokens": 0, "mismatched_tokens": {"draft-verify": 0, "pqd": 0}, "mat": {}}
    mats: dict[str, list[float]] = {}
    start = time.time()
    for case in range(args.cases):
        family, mode = rng.choice(FAMILIES), rng.choice(["o-ptp", "c-ptp", "mtp"])
        sampling, seed = rng.choice(SAMPLINGS), rng.randrange(2**31)
        model = ptp.PTPModel.from_teacher(tiny_teacher(family, case, rng.choice([1.0, 8.0])), mode=mode,
                                          lora_rank=4, window=16).eval()
        randomize_adapters(model, case)
        prompt = [rng.randrange(48) for _ in range(rng.randint(1, 16))]
        n = rng.randint(16, 64)
        ref = ptp.generate(model, prompt, n, sampling, seed, "ar").tokens
        totals["cases"] += 1
        totals["tokens"] += len(ref)
        drafters = {"ptp": None, "oracle": OracleDrafter(model, sampling), "noisy": OracleDrafter(model, sampling, 0.3)}
        for name, drafter in drafters.items():
            for method in ("draft-verify", "pqd"):
                out = ptp.generate(model, prompt, n, sampling, seed, method, slot_budget=args.budget, drafter=drafter)
                totals["mismatched_tokens"][method] += int((out.tokens != ref).sum()) + abs(len(out.tokens) - len(ref))
                mats.setdefault(f"{method}/{name}/{mode}", []).append(out.mat)
    totals["mat"] = {k: round(sum(v) / len(v), 3) for k, v in sorted(mats.items())}
    totals["oracle_long"] = oracle_long_run(args.budget)
    totals["budget"] = args.budget
    totals["seconds"] = round(time.time() - start, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(totals, indent=2) + "\n")
    print(f"{totals['cases']} cases, {totals['tokens']} tokens per method and drafter, "
          f"mismatches: {totals['mismatched_tokens']}")
    for key, mat in totals["mat"].items():
        print(f"  MAT {key:28s} {mat:6.2f}")
    print(f"oracle, {256} tokens, budget {args.budget}: {totals['oracle_long']}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
