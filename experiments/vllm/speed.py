"""Tokens/s of vLLM with and without the ptp drafter, side by side: both servers up at once, requests
alternating between them (plain, drafter, plain, drafter, ...), so machine noise hits both alike.

    .venv/bin/python experiments/vllm/speed.py --sampling greedy --out experiments/vllm/results/speed-greedy.json
    .venv/bin/python experiments/vllm/speed.py --sampling exact --out experiments/vllm/results/speed-exact.json

``greedy``: greedy requests, vLLM's own verification. ``exact``: T=0.7 k50 p0.95 with ptp's exact
sampler on both servers (``PTP_VLLM_EXACT=1``). Each prompt is sent ``--repeats`` times to each server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

from check import SEED0, add_server_arguments, complete, vllm_server
from transformers import AutoTokenizer

from ptp.bench.prompts import first_prompt_ids
from ptp.sampling import BENCH_SAMPLING, SamplingConfig
from ptp.teachers import resolve_teacher
from ptp.vllm_plugin import drafter_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampling", choices=["greedy", "exact"], default="greedy")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    teacher = str(resolve_teacher("smollm2-135m-instruct"))
    prompts = [ids for _, ids in first_prompt_ids(args.prompts, AutoTokenizer.from_pretrained(teacher),
                                                  args.num_prompts)]
    order = drafter_order(args.head)
    exact = args.sampling == "exact"
    sampling = (SamplingConfig(BENCH_SAMPLING.temperature, BENCH_SAMPLING.top_k, BENCH_SAMPLING.top_p, order)
                if exact else SamplingConfig(temperature=0, order=order))
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(vllm_server(args, teacher, drafter, exact, out.with_suffix(f".{name}.log")))
                for name, drafter in (("plain", None), ("ptp", "head"))}
        tokens = {name: 0 for name in urls}
        seconds = {name: 0.0 for name in urls}
        ratios = []  # ptp tok/s over plain tok/s, per prompt and repeat
        for repeat in range(args.repeats):
            for i, ids in enumerate(prompts):
                rate = {}
                for name, url in urls.items():
                    start = time.perf_counter()
                    n = len(complete(url, ids, sampling, SEED0 + i, args.max_tokens))
                    elapsed = time.perf_counter() - start
                    tokens[name] += n
                    seconds[name] += elapsed
                    rate[name] = n / elapsed
                ratios.append(rate["ptp"] / rate["plain"])
                print(f"repeat {repeat} prompt {i}: plain {rate['plain']:.1f} tok/s, ptp {rate['ptp']:.1f} "
                      f"({ratios[-1]:.2f}x)", flush=True)
    report = {"sampling": args.sampling, "prompts": args.num_prompts, "max_tokens": args.max_tokens,
              "draft_len": args.draft_len, "repeats": args.repeats,
              "tokens_per_s": {name: tokens[name] / seconds[name] for name in urls},
              "speedup": (tokens["ptp"] / seconds["ptp"]) / (tokens["plain"] / seconds["plain"]),
              "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
              "ratios": ratios}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "ratios"}, indent=2))


if __name__ == "__main__":
    main()
