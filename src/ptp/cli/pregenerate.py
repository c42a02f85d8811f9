"""Sample teacher completions for a prompt set into token shards (kind "teacher-samples"), resumably.

Prompts come from a JSONL file ({"prompt": ...} per line, e.g. from `ptp prompts`) or from a
directory of document shards (contexts of --prompt-tokens tokens cut from the documents). Killed and
restarted with the same arguments, it continues after the last complete shard; other arguments on an
existing --out are refused.

With --documents instead of --teacher, it tokenizes plain data (a `ptp corpus` split, text files,
JSONL or a dataset saved with `save_to_disk`) into shards of kind "documents" (BOS + text + EOS per
document) for pretraining or inverse-autoregressive training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptp.cli.common import add_document_args, add_sampling_args, document_source, sampling_from_args
from ptp.cli.defaults import BENCH_SAMPLING, PREGEN, ROWS_PER_SHARD

NAME = "pregenerate"
HELP = "sample teacher completions (or tokenize documents) into token shards"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output shard directory (resumed if it exists)")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (HF fast tokenizer)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", help="teacher model directory (HF causal LM): sample completions")
    src.add_argument("--documents", help="document source to tokenize instead (no teacher)")
    g = p.add_argument_group("teacher samples")
    g.add_argument("--prompts", help="prompt JSONL, or a directory of document shards to cut contexts from")
    g.add_argument("--max-prompt-tokens", type=int, default=512, help="JSONL prompts keep their last N tokens")
    g.add_argument("--prompt-tokens", type=int, default=128, help="shard prompts: context length")
    g.add_argument("--max-prompts", type=int, default=10_000, help="shard prompts: how many contexts")
    g.add_argument("--completions", type=int, default=PREGEN.completions_per_prompt, help="per prompt")
    g.add_argument("--max-new-tokens", type=int, default=PREGEN.max_new_tokens, help="completion length")
    g.add_argument("--batch-size", type=int, default=PREGEN.batch_size, help="rows per teacher forward")
    g.add_argument("--prompts-per-shard", type=int, default=PREGEN.prompts_per_shard,
                   help="prompts per shard (and per resume point)")
    g.add_argument("--seed", type=int, default=0, help="base seed of the per-row u-streams")
    g.add_argument("--no-stop-at-eos", action="store_true", help="always sample --max-new-tokens tokens")
    g.add_argument("--device", default=None, help="torch device; unset: cuda if available, else cpu")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="teacher weights dtype")
    add_sampling_args(p, BENCH_SAMPLING)
    add_document_args(p)
    p.add_argument("--rows-per-shard", type=int, default=ROWS_PER_SHARD, help="documents per shard")
    p.add_argument("--no-shuffle", action="store_true",
                   help="documents: keep the source order (default: shuffle in memory, seeded by --seed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if args.documents:
        return _run_documents(args, tokenizer)
    if not args.prompts:
        raise ValueError("--teacher needs --prompts (a JSONL file or a document shard directory)")
    return _run_teacher(args, tokenizer)


def _run_documents(args: argparse.Namespace, tokenizer) -> int:
    from tqdm import tqdm

    from ptp.data.documents import detect_format, iter_documents, tokenize_documents

    fmt = detect_format(args.documents) if args.format == "auto" else args.format
    shuffle_seed = None if args.no_shuffle else args.seed
    extra = {"source": str(Path(args.documents).resolve()), "format": fmt, "split": args.split,
             "shuffle_seed": shuffle_seed}
    with tqdm(desc="documents", unit=" docs", file=sys.stderr, disable=args.quiet) as bar:
        manifest = tokenize_documents(iter_documents(document_source(args.documents, args)), tokenizer, args.out,
                                      tokenizer_name=str(Path(args.tokenizer).resolve()), extra=extra,
                                      rows_per_shard=args.rows_per_shard, shuffle_seed=shuffle_seed,
                                      on_batch=lambda docs, tokens: bar.update(docs))
    counts = manifest["counts"]
    print(f"{counts['sequences']} documents, {counts['tokens']} tokens written to {args.out}")
    return 0


def _load_prompts(args: argparse.Namespace, tokenizer) -> list[list[int]]:
    from ptp.data.pregenerate import encode_prompts, prompts_from_documents
    from ptp.data.prompts import read_prompts
    from ptp.data.shards import TokenShards

    if Path(args.prompts).is_dir():
        return prompts_from_documents(TokenShards(args.prompts), args.prompt_tokens, args.max_prompts, args.seed)
    return encode_prompts([p.prompt for p in read_prompts(args.prompts)], tokenizer, args.max_prompt_tokens)


def _run_teacher(args: argparse.Namespace, tokenizer) -> int:
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    from ptp.data.pregenerate import PregenConfig, pregenerate
    from ptp.sampling import SamplingConfig

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=getattr(torch, args.dtype)).to(device)
    prompts = _load_prompts(args, tokenizer)
    sampling = sampling_from_args(args, SamplingConfig(**vars(BENCH_SAMPLING)))
    cfg = PregenConfig(sampling=sampling, completions_per_prompt=args.completions,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       prompts_per_shard=args.prompts_per_shard, seed=args.seed,
                       eos_token_id=None if args.no_stop_at_eos else tokenizer.eos_token_id)
    provenance = {"teacher": str(Path(args.teacher).resolve()), "prompts": str(Path(args.prompts).resolve())}
    total = len(prompts) * cfg.completions_per_prompt
    with tqdm(total=total, desc="completions", unit=" rows", file=sys.stderr, disable=args.quiet) as bar:
        manifest = pregenerate(model, prompts, cfg, args.out, tokenizer_name=str(Path(args.tokenizer).resolve()),
                               provenance=provenance, on_rows=bar.update)
    counts = manifest["counts"]
    print(f"{counts['sequences']} rows ({len(prompts)} prompts), {counts['tokens']} tokens written to {args.out}")
    return 0
