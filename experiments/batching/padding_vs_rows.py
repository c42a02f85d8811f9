"""Per-row cache offsets (ptp's RowCache) against left padding with masks (Hugging Face's own batched
``generate`` over a DynamicCache), on the same prompts, greedy AR, side by side in one process; and
how many rows of each equal the prompt decoded alone.

    python experiments/batching/padding_vs_rows.py --out experiments/batching/results/padding_vs_rows.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

import ptp
from ptp.bench.prompts import first_prompt_ids
from ptp.cli.common import tokenizer_dir

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "src/ptp/assets/smollm2-head"))
    parser.add_argument("--prompts", default=str(ROOT.parent / "shared/benchmarks/spec_bench_dev.jsonl"))
    parser.add_argument("--batch-sizes", default="4,16")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = ptp.PTPModel.from_pretrained(args.model).eval()
    teacher = model.teacher
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(args.model))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    prompts = [ids for _, ids in first_prompt_ids(args.prompts, tokenizer, max(sizes))]
    greedy, n = ptp.SamplingConfig(temperature=0), args.max_new_tokens
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for b in sizes:
        batch = prompts[:b]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        times = {"row_cache": 0.0, "left_padding": 0.0}
        same = True
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = ptp.generate(model, batch, n, greedy, 0, "ar", eos_token_id=[])
            times["row_cache"] += time.perf_counter() - start
            start = time.perf_counter()
            with torch.no_grad():
                theirs = teacher.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                          do_sample=False, pad_token_id=pad)
            times["left_padding"] += time.perf_counter() - start
            same &= [o.tokens.tolist() for o in ours] == theirs[:, width:].tolist()
        tokens = b * n * args.repeats
        alone = [ptp.generate(model, p, n, greedy, 0, "ar", eos_token_id=[]).tokens.tolist() for p in batch]
        row = {"batch": b, "row_cache_tokens_per_s": round(tokens / times["row_cache"], 2),
               "left_padding_tokens_per_s": round(tokens / times["left_padding"], 2),
               "row_cache_vs_left_padding": round(times["left_padding"] / times["row_cache"], 3),
               "same_tokens": same,
               "row_cache_rows_equal_to_alone": sum(o.tokens.tolist() == a for o, a in zip(ours, alone, strict=True)),
               "left_padding_rows_equal_to_alone": sum(t == a for t, a in zip(theirs[:, width:].tolist(), alone,
                                                                               strict=True))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"max_new_tokens": n, "threads": torch.get_num_threads(), "rows": rows},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
