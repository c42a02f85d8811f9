"""Sampled answer tokens per second of ``sample_with_features`` (what ``ptp features`` spends its time on).

The first ``--batch`` built-in chat instructions (``chat_instructions(seed=5)``), one completion each at
T=0.7, top-k 50, top-p 0.95, order argmax, up to ``--max-new-tokens``, ending at EOS; prefill included.
One JSON record per batch size; run it with ``ptp``'s sources of two commits to compare them:

  python experiments/feature_head/sampler_speed.py --batch 32 64 128 --threads 1 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
from transformers import AutoTokenizer

import ptp.data.features
from ptp.checkpoint_format import teacher_tokenizer_dir
from ptp.data.chat_prompts import chat_instructions
from ptp.data.features import FeatureConfig, sample_with_features
from ptp.model import load_teacher
from ptp.sampling import BENCH_SAMPLING
from ptp.teachers import DEFAULT_TEACHER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_teacher(DEFAULT_TEACHER).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_tokenizer_dir(DEFAULT_TEACHER))
    records = []
    for batch in args.batch:
        prompts = []
        for text in chat_instructions(batch, seed=5):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
            prompts.append(list(ids if isinstance(ids, list) else ids["input_ids"])[-256:])
        cfg = FeatureConfig(sampling=replace(BENCH_SAMPLING, order="argmax"), max_new_tokens=args.max_new_tokens,
                            batch_size=batch, eos_token_id=tokenizer.eos_token_id)
        start = time.perf_counter()
        rows = sample_with_features(teacher, prompts, list(range(batch)), cfg)
        seconds = time.perf_counter() - start
        tokens = sum(r.tokens.numel() - r.prompt_len for r in rows)
        record = {"source": ptp.data.features.__file__, "batch": batch, "threads": args.threads,
                  "prompt_tokens": sum(map(len, prompts)), "answer_tokens": tokens, "seconds": round(seconds, 1),
                  "answer_tokens_per_s": round(tokens / seconds, 1),
                  "answers": [r.tokens[r.prompt_len :].tolist() for r in rows]}
        print({k: v for k, v in record.items() if k != "answers"}, flush=True)
        records.append(record)
    with open(args.json, "w") as f:
        json.dump(records, f)


if __name__ == "__main__":
    main()
