"""Held-out MAT and slot-0 accuracy against training CPU time, drafter vs its u-blind control.

  python experiments/feature_head/plot_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

out, runs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
for label, run in runs:
    with open(f"{run}/eval.csv") as handle:
        rows = list(csv.DictReader(handle))
    hours = [float(r["cpu_seconds"]) / 3600 for r in rows]
    left.plot(hours, [float(r["mat"]) for r in rows], marker="o", label=label)
    right.plot(hours, [float(r["acc_0"]) for r in rows], marker="o", label=label)
left.set(xlabel="training CPU hours (one thread)", ylabel="held-out MAT (draft-verify, window 8)")
right.set(xlabel="training CPU hours (one thread)", ylabel="held-out slot-0 accuracy")
for ax in (left, right):
    ax.grid(alpha=0.3)
    ax.legend()
fig.suptitle("SmolLM2-135M-Instruct feature head, T=0.7 top-k 50 top-p 0.95, 1,088 training rows", fontsize=10)
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"wrote {out}")
