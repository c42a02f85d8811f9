"""Held-out MAT and slot-0 accuracy against training CPU time, drafter vs its u-blind control.

  python experiments/feature_head/plot_curves.py OUT.png "TITLE" LABEL=RUN[,RUN...] [LABEL=...]

A comma-separated chain is one drafter trained in stages (``train-head --init`` of the previous
stage's best): its curves are joined, each stage's CPU time counted after the previous stage's. A
RUN is a run directory or its eval.csv. A dotted vertical line marks where a stage begins.
"""

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _rows(run: str) -> list[dict]:
    path = Path(run)
    with open(path if path.suffix == ".csv" else path / "eval.csv") as handle:
        return list(csv.DictReader(handle))


out, title, runs = sys.argv[1], sys.argv[2], [a.split("=", 1) for a in sys.argv[3:]]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
for label, chain in runs:
    hours, mat, acc0, offset = [], [], [], 0.0
    for k, run in enumerate(chain.split(",")):
        rows = _rows(run)
        if k:
            for ax in (left, right):
                ax.axvline(offset / 3600, color="grey", linestyle=":", linewidth=1)
        hours += [(offset + float(r["cpu_seconds"])) / 3600 for r in rows]
        mat += [float(r["mat"]) for r in rows]
        acc0 += [float(r["acc_0"]) for r in rows]
        offset += float(rows[-1]["cpu_seconds"])
    left.plot(hours, mat, marker=".", label=label)
    right.plot(hours, acc0, marker=".", label=label)
left.set(xlabel="training CPU hours (one thread)", ylabel="held-out MAT (draft-verify, window 8)")
right.set(xlabel="training CPU hours (one thread)", ylabel="held-out slot-0 accuracy")
for ax in (left, right):
    ax.grid(alpha=0.3)
    ax.legend()
fig.suptitle(title, fontsize=10)
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"wrote {out}")
