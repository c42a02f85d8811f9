"""Tokens/s of batched decoding per batch size, side by side with one request at a time.

For each batch size B: the first B Spec-Bench dev prompts (first turns through the chat template),
each with its own seed, decoded together (``ptp.generate`` over the list) and one after another
(B=1 each); the batched rows must equal the one-at-a-time tokens. Writes JSON.

    python experiments/batching/throughput.py --out experiments/batching/results/throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

import ptp
from ptp.bench.prompts import first_prompt_ids
from ptp.cli.common import tokenizer_dir
from ptp.sampling import BENCH_SAMPLING

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "src/ptp/assets/smollm2-head"))
    parser.add_argument("--prompts", default=str(ROOT.parent / "shared/benchmarks/spec_bench_dev.jsonl"))
    parser.add_argument("--batch-sizes", default="1,2,4,8,16")
    parser.add_argument("--methods", default="ar,draft-verify")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ptp.PTPModel.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(args.model))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    prompts = [ids for _, ids in first_prompt_ids(args.prompts, tokenizer, max(sizes))]
    sampling, n = BENCH_SAMPLING, args.max_new_tokens
    ptp.generate(model, prompts[0], 8, sampling, 0, "ar")  # warm-up
    rows = []
    for method in args.methods.split(","):
        alone, alone_seconds = [], []
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            alone.append(ptp.generate(model, prompt, n, sampling, i, method).tokens.tolist())
            alone_seconds.append(time.perf_counter() - start)
        for b in sizes:
            start = time.perf_counter()
            outs = ptp.generate(model, prompts[:b], n, sampling, list(range(b)), method)
            seconds = time.perf_counter() - start
            tokens = sum(len(o.tokens) for o in outs)
            row = {
                "method": method, "batch": b, "tokens": tokens, "seconds": round(seconds, 3),
                "tokens_per_second": round(tokens / seconds, 2),
                "one_at_a_time_tokens_per_second": round(tokens / sum(alone_seconds[:b]), 2),
                "speedup_vs_one_at_a_time": round(sum(alone_seconds[:b]) / seconds, 3),
                "mat": round(tokens / sum(o.teacher_calls for o in outs), 3),
                "identical_to_alone": all(o.tokens.tolist() == a for o, a in zip(outs, alone[:b], strict=True)),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {"model": args.model, "max_new_tokens": n, "threads": args.threads, "sampling": sampling.to_dict(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
