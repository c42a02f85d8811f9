"""Train a feature-head drafter on `ptp features` data (no teacher forward during training).

The head is a few decoder layers reading the teacher's last hidden states; its draft vocabulary
is the most frequent tokens of the training completions. Validation rows are the last rows of the
data (held out); eval.csv records held-out MAT against wall and CPU seconds, and the run keeps
`last` and `best` checkpoints (`--resume` continues the last one). `--mode mtp` trains the
independent-prediction control (u replaced by a constant) with the same budget.

Examples:
  ptp --threads 1 train-head --features runs/features --out runs/head --time-limit 3600
  ptp train-head --device cuda --features runs/features --out runs/head --steps 1000000 --time-limit 240 \\
      --decay-by-time
"""

from __future__ import annotations

import argparse
import sys

from ptp.cli.common import add_device_arg, torch_device
from ptp.cli.defaults import HEAD, HEAD_TRAIN

NAME = "train-head"
HELP = "train a feature-head drafter on cached teacher features"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d, h = HEAD_TRAIN, HEAD  # HeadTrainConfig's and HeadConfig's defaults
    p.add_argument("--features", nargs="+", required=True, help="`ptp features` directories")
    p.add_argument("--out", required=True, help="run directory (checkpoints, eval.csv)")
    p.add_argument("--teacher", default=None, help="the teacher the features came from (default: SmolLM2)")
    p.add_argument("--mode", default=None, choices=("o-ptp", "c-ptp", "mtp"),
                   help="o-ptp: argmax drafts from u; c-ptp: distilled distributions picked with u; mtp: the "
                        "u-blind control (default: --init's mode, else o-ptp)")
    p.add_argument("--layers", type=int, default=h.layers, help="decoder layers of the head")
    p.add_argument("--draft-vocab", type=int, default=h.draft_vocab, help="draft vocabulary size (0 = all)")
    p.add_argument("--vocab-from", default=None, metavar="DRAFTER_DIR",
                   help="take the draft vocabulary of this trained head instead of the training rows' most frequent "
                        "tokens (e.g. rows of teacher-forced text, whose words are not the teacher's)")
    p.add_argument("--window", type=int, default=8,  # ptp.model.TRAIN_WINDOW (a literal: --help imports no torch)
                   help="u-slots per training window (the longest draft)")
    p.add_argument("--embedding", default="arith", help="u feature map (binary, arith, cosine, interp)")
    p.add_argument("--order", default=None, choices=("id", "argmax", "sorted"),
                   help="CDF order the drafter reads u in (argmax: u below the top probability means the "
                        "most likely token, and greedy drafting asks for u = 0) (default: --init's order, "
                        "else argmax)")
    p.add_argument("--val-rows", type=int, default=64, help="rows held out for validation (the last ones)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--rows-per-step", type=int, default=d.rows_per_step, help="rows per step")
    p.add_argument("--windows-per-row", type=int, default=d.windows_per_row, help="windows per row")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--z-beta", type=float, default=d.z_beta, help="training u within the interval: Beta(b, b)")
    p.add_argument("--distill", type=float, default=d.distill,
                   help="o-ptp / mtp: add this weight of a soft cross-entropy toward the teacher's whole distribution "
                        "of each target (read from the stored features), so every target teaches more than its token")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="validate + checkpoint every N steps")
    p.add_argument("--seed", type=int, default=d.seed, help="training randomness")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds (checkpointed)")
    p.add_argument("--decay-by-time", action="store_true",
                   help="with --time-limit: the learning rate's cosine decay ends at the time limit or at --steps, "
                        "whichever comes first, so a run stopped by time still ends annealed")
    add_device_arg(p, "the teacher and the head run (the rows stay in CPU memory)")
    p.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    p.add_argument("--init", default=None, metavar="DRAFTER_DIR",
                   help="start from this trained head (its mode, shape, CDF order and draft vocabulary), e.g. "
                        "to continue on more data; --mode and --order default to its own and must agree with it")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from ptp.checkpoint_format import peek_config
    from ptp.data.features import feature_manifest, read_features, relayout
    from ptp.head import HeadConfig, frequent_tokens
    from ptp.model import PTPModel
    from ptp.sampling import SamplingConfig
    from ptp.teachers import DEFAULT_TEACHER
    from ptp.training.head import HeadTrainConfig, train_head

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    device = torch_device(args.device)  # before the rows are read: a bad device fails at once
    recorded = peek_config(args.init).get("ptp", {}) if args.init else {}
    args.mode = args.mode or recorded.get("mode") or "o-ptp"
    args.order = args.order or (recorded.get("sampling") or {}).get("order") or "argmax"
    if args.decay_by_time and args.time_limit is None:
        raise ValueError("--decay-by-time needs --time-limit")
    manifests = [feature_manifest(d) for d in args.features]  # checked before any shard is read
    samplings = {json_key({**m["config"]["sampling"], "order": None}) for m in manifests}
    if len(samplings) != 1:
        raise ValueError(f"the feature directories were sampled under different settings: {samplings}")
    sampling = replace(SamplingConfig.from_dict(manifests[0]["config"]["sampling"]), order=args.order)
    # Rows keep their directory's CDF order; those sampled in another order are relaid after loading.
    rows, orders = [], []
    for directory, manifest in zip(args.features, manifests, strict=True):
        found = list(read_features(directory))
        rows += found
        orders += [SamplingConfig.from_dict(manifest["config"]["sampling"]).order] * len(found)
    if len(rows) <= args.val_rows:
        raise ValueError(f"{len(rows)} rows is too few for {args.val_rows} validation rows")
    say(f"loading {args.teacher or DEFAULT_TEACHER}")
    from ptp.model import load_teacher

    teacher = load_teacher(args.teacher or DEFAULT_TEACHER)
    stale = [i for i, order in enumerate(orders) if order != args.order]
    if stale:  # same samples, u's intervals laid out in the drafter's order
        say(f"recomputing the u intervals of {len(stale)} rows in {args.order} order")
        for i, row in zip(stale, relayout([rows[i] for i in stale], teacher, sampling), strict=True):
            rows[i] = row
    train_rows, val_rows = rows[: -args.val_rows], rows[-args.val_rows :]
    tokens = sum(r.tokens.numel() - r.prompt_len for r in train_rows)
    say(f"{len(train_rows)} training rows ({tokens} answer tokens), {len(val_rows)} validation rows")
    if args.init:
        model = PTPModel.from_pretrained(args.init, teacher=teacher)
        if not model.is_head or model.cfg.mode != args.mode or model.cfg.sampling.order != args.order:
            raise ValueError(f"{args.init} is a {model.cfg.drafter} drafter in mode {model.cfg.mode}, order "
                             f"{model.cfg.sampling.order}; asked for a head in {args.mode}, {args.order}")
        if not model.cfg.sampling.same_distribution(sampling):
            raise ValueError(f"{args.init} was trained for {model.cfg.sampling}, the features were sampled with "
                             f"{sampling}")
        say(f"starting from {args.init} (draft vocabulary {model.head.vocab_ids.numel()} tokens)")
    else:
        vocab = int(teacher.get_output_embeddings().weight.shape[0])
        counts = torch.bincount(torch.cat([r.tokens[r.prompt_len:] for r in train_rows]), minlength=vocab)
        if args.vocab_from:
            vocab_ids = PTPModel.from_pretrained(args.vocab_from, teacher=teacher).head.vocab_ids
            head = HeadConfig(layers=args.layers, draft_vocab=vocab_ids.numel())
        else:
            eos = teacher.generation_config.eos_token_id
            eos = [eos] if isinstance(eos, int) else list(eos or [])
            vocab_ids = frequent_tokens(counts, min(args.draft_vocab or vocab, vocab), always=eos)
            head = HeadConfig(layers=args.layers, draft_vocab=args.draft_vocab)
        covered = float(counts[vocab_ids].sum() / counts.sum())
        say(f"draft vocabulary: {vocab_ids.numel()} tokens, covering {covered:.2%} of the training answers' tokens")
        model = PTPModel.from_teacher(teacher, mode=args.mode, embedding=args.embedding, sampling=sampling,
                                      window=args.window, drafter="head", head=head, vocab_ids=vocab_ids)
    model.to(device)
    cfg = HeadTrainConfig(steps=args.steps, rows_per_step=args.rows_per_step, windows_per_row=args.windows_per_row,
                          lr=args.lr, z_beta=args.z_beta, eval_every=args.eval_every, seed=args.seed,
                          distill=args.distill)
    result = train_head(model, train_rows, val_rows, cfg, args.out, resume=args.resume, progress=say,
                        time_limit_s=args.time_limit, decay_by_time=args.decay_by_time)
    print(f"step {result['step']}: best held-out MAT {result['best_mat']:.3f}; checkpoints in {args.out} "
          "(best/ is the drafter)")
    return 0


def json_key(data: dict) -> str:
    import json

    return json.dumps(data, sort_keys=True)
