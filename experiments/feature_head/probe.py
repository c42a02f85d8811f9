"""What limits a trained feature head: where it reads u, and the ceilings it stands against.

On held-out feature rows (the last ``--val-rows`` rows of the given directories, as in train-head):
- ``as trained``: per-slot accuracy and MAT with u drawn inside each token's interval;
- ``u uninformative``: the same windows with u drawn uniformly on [0, 1), unrelated to the token.
  A head that reads u loses accuracy here; a u-blind one (the MTP control) does not;
- accuracy split by whether the sampled token is the teacher's own most likely token (from the
  stored feature through the teacher's lm_head): a u-blind drafter can only get the first kind;
- ``greedy oracle``: the MAT of a perfect u-blind drafter (the teacher's greedy continuation; while
  drafts match it equals the sampled one), over the same windows: the MTP control's ceiling. A
  drafter that reads u can reach window + 1.

  python experiments/feature_head/probe.py --model RUN/best --features feat-s0 feat-s1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace

import torch

from ptp.data.features import FeatureRow, feature_manifest, read_features, relayout
from ptp.model import PTPModel
from ptp.sampling import SamplingConfig
from ptp.training.head import _starts, window_pass


def _teacher_argmax_hits(model: PTPModel, row: FeatureRow) -> torch.Tensor:
    """[S] bool: the token at i is the teacher's most likely token after i - 1 (False in the prompt)."""
    hits = torch.zeros(row.tokens.numel(), dtype=torch.bool)
    p = row.prompt_len
    logits = model.teacher.get_output_embeddings()(row.features[p - 1 : -1].float())
    hits[p:] = logits.argmax(-1) == row.tokens[p:]
    return hits


@torch.no_grad()
def probe(model: PTPModel, rows: list[FeatureRow], windows_per_row: int, seed: int = 1234) -> dict:
    window = model.cfg.window
    out: dict = {}
    for name, uninformative in (("as_trained", False), ("u_uninformative", True)):
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        correct, counted, runs, oracle_runs = torch.zeros(window), torch.zeros(window), [], []
        split = {"argmax": [0, 0], "other": [0, 0]}  # [right, counted]
        for row in rows:
            starts = _starts(row, windows_per_row, rng)
            if starts is None:
                continue
            z = torch.rand((starts.numel(), window), generator=gen)
            used = row
            if uninformative:  # every completion token's "interval" is all of [0, 1)
                ones = torch.ones_like(row.right)
                used = replace(row, left=torch.where(row.right > 0, 0 * ones, row.left),
                               right=torch.where(row.right > 0, ones, row.right))
            res = window_pass(model, used, starts, z)
            inside = starts[:, None] + torch.arange(window) < row.tokens.numel()
            correct += res.correct.float().sum(0)
            counted += inside.float().sum(0)
            runs.append(res.correct[res.full].long().cumprod(1).sum(1))
            hits = _teacher_argmax_hits(model, row)
            index = (starts[:, None] + torch.arange(window)).clamp(max=row.tokens.numel() - 1)
            is_max = hits[index] & inside
            oracle_runs.append(is_max[res.full].long().cumprod(1).sum(1))
            for key, mask in (("argmax", is_max), ("other", inside & ~is_max)):
                split[key][0] += int((res.correct & mask).sum())
                split[key][1] += int(mask.sum())
        lead = torch.cat(runs).float()
        out[name] = {
            "mat": round(1 + float(lead.mean()), 4),
            "acc": [round(float(c / n), 4) for c, n in zip(correct, counted, strict=True)],
            "acc_when_teacher_argmax": round(split["argmax"][0] / max(split["argmax"][1], 1), 4),
            "acc_when_not_argmax": round(split["other"][0] / max(split["other"][1], 1), 4),
            "share_teacher_argmax": round(split["argmax"][1] / max(split["argmax"][1] + split["other"][1], 1), 4),
        }
        out["greedy_oracle_mat"] = round(1 + float(torch.cat(oracle_runs).float().mean()), 4)
    out["window"] = window
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True, help="trained head directories (RUN/best)")
    parser.add_argument("--features", nargs="+", required=True)
    parser.add_argument("--val-rows", type=int, default=64)
    parser.add_argument("--windows-per-row", type=int, default=32)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    rows = [r for d in args.features for r in read_features(d)][-args.val_rows :]
    orders = [SamplingConfig.from_dict(feature_manifest(d)["config"]["sampling"]).order for d in args.features]
    results = {}
    for directory in args.model:
        model = PTPModel.from_pretrained(directory).eval()
        used = rows
        if orders[-1] != model.cfg.sampling.order:  # validation rows come from the last directory
            used = relayout(rows, model.teacher, model.cfg.sampling)
        results[directory] = {"mode": model.cfg.mode, **probe(model, used, args.windows_per_row)}
        print(directory, json.dumps(results[directory]), flush=True)
    with open(args.json, "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
