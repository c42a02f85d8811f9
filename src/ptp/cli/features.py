"""Sample teacher completions and keep the teacher's features, for training a feature-head drafter.

Prompts are chat instructions built offline from the standard library's docstrings and a few
templates (``ptp.data.chat_prompts``; never a benchmark), or your own JSONL of {"prompt": ...},
sent through the tokenizer's chat template. Writes resumable safetensors shards: run the same
command again to continue after an interruption.

With --teacher-forced the teacher reads given answers instead of sampling its own: one batched
forward per row, about four times cheaper per token on a CPU. The pairs are built from documented
Python code (a docstring answers "what does X do", a function's source answers "write a function
to ...": the standard library, plus every --docs folder), or come from your JSONL of
{"prompt": ..., "response": ...}. Answer tokens the teacher could not have sampled are kept as
context but are no training targets.

Examples:
  ptp --threads 1 features --out runs/features --num-prompts 2000 --seed 0
  ptp --threads 1 features --teacher-forced --out runs/forced --num-prompts 20000 --seed 1
  ptp features --device cuda --out runs/features --num-prompts 20000 --batch-size 512 --seed 10
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time

from ptp.cli.common import add_device_arg, add_sampling_args, sampling_from_args, torch_device

NAME = "features"
HELP = "teacher samples + the teacher's features (training data for a feature-head drafter)"
MAX_PROMPT_TOKENS = 384


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default=None, help="teacher: registry name, .gguf, HF directory (default: SmolLM2)")
    p.add_argument("--out", required=True, help="output directory (resumed if it exists)")
    p.add_argument("--prompts", default=None, help='JSONL of {"prompt": text} (default: built-in chat instructions)')
    p.add_argument("--num-prompts", type=int, default=2000, help="how many prompts (one completion each)")
    p.add_argument("--seed", type=int, default=0, help="prompt choice and u-stream seed")
    p.add_argument("--max-new-tokens", type=int, default=160, help="completion length unless EOS comes first")
    p.add_argument("--batch-size", type=int, default=64,
                   help="rows sampled together (finished rows leave the batch; a shard file holds this many prompts, "
                        "at least 64); one CPU thread: 32 -> 57, 64 -> 63, 128 -> 70 answer tokens/s")
    p.add_argument("--teacher-forced", action="store_true",
                   help="the teacher reads given answers (built-in pairs, or 'response' in --prompts) instead of "
                        "sampling; --max-new-tokens then caps the answer")
    p.add_argument("--docs", action="append", default=[], metavar="DIR",
                   help="with --teacher-forced and built-in pairs: more folders of documented Python code "
                        "(repeatable; the standard library is always used)")
    p.add_argument("--order", default="argmax", choices=("id", "argmax", "sorted"),
                   help="CDF order of the stored u intervals: sample in the order the drafter will read u "
                        "(train-head's --order) and training needs no relayout")
    add_device_arg(p, "the teacher runs")
    add_sampling_args(p, defaults=None)


def _texts(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(prompt, response or None) for each row."""
    if args.prompts is None:
        if args.teacher_forced:
            from pathlib import Path

            from ptp.data.chat_prompts import chat_pairs

            stdlib = Path(sysconfig.get_paths()["stdlib"])
            return list(chat_pairs(args.num_prompts, args.seed, [stdlib, *map(Path, args.docs)]))
        from ptp.data.chat_prompts import chat_instructions

        return [(text, None) for text in chat_instructions(args.num_prompts, args.seed)]
    texts = []
    with open(args.prompts, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                item = json.loads(line)
                if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                    raise ValueError(f"{args.prompts}:{n}: expected an object with a 'prompt' string")
                if args.teacher_forced and not isinstance(item.get("response"), str):
                    raise ValueError(f"{args.prompts}:{n}: --teacher-forced needs a 'response' string")
                texts.append((item["prompt"], item["response"] if args.teacher_forced else None))
    return texts[: args.num_prompts]


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from transformers import AutoTokenizer

    from ptp.checkpoint_format import teacher_tokenizer_dir
    from ptp.data.features import FeatureConfig, write_features
    from ptp.model import load_teacher
    from ptp.sampling import BENCH_SAMPLING
    from ptp.teachers import DEFAULT_TEACHER

    device = torch_device(args.device)
    source = args.teacher or DEFAULT_TEACHER
    print(f"loading {source}", file=sys.stderr, flush=True)
    teacher = load_teacher(source).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(teacher_tokenizer_dir(source))
    if not tokenizer.chat_template:
        raise ValueError(f"the tokenizer of {source} has no chat template")
    if args.docs and not args.teacher_forced:
        raise ValueError("--docs needs --teacher-forced")
    prompts, responses = [], []
    for text, answer in _texts(args):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        ids = ids if isinstance(ids, list) else ids["input_ids"]
        prompts.append(list(ids)[-MAX_PROMPT_TOKENS:])
        if answer is not None:
            responses.append(tokenizer(answer, add_special_tokens=False)["input_ids"])
    sampling = sampling_from_args(args, replace(BENCH_SAMPLING, order=args.order))
    # A batch never spans two shards: a shard holds at least a batch (64 prompts as before for smaller ones).
    rows_per_shard = max(FeatureConfig.rows_per_shard, args.batch_size)
    cfg = FeatureConfig(sampling=sampling, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        rows_per_shard=rows_per_shard, seed=args.seed, eos_token_id=tokenizer.eos_token_id,
                        teacher_forced=args.teacher_forced)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"[{done}/{total}] prompts {verb} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    verb = "read" if args.teacher_forced else "sampled"
    write_features(teacher, prompts, cfg, args.out, progress, responses if args.teacher_forced else None)
    print(f"features of {len(prompts)} prompts in {args.out}")
    return 0
