"""Does a drafter read u? Per-slot accuracy on validation windows, split by whether the teacher's
token is its own most likely one (the independent-prediction control gets those right without u).

Usage: python scripts/drafter_diagnostics.py CHECKPOINT VAL_SAMPLES [--order id|argmax|sorted] [--rows 32]
VAL_SAMPLES: teacher-sample shards (ptp pregenerate) of held-out prompts.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from ptp.model import PTPModel
from ptp.sampling import CDF_ORDERS
from ptp.training import DataConfig, DistillConfig, PackingConfig
from ptp.training.distill import eval_pass
from ptp.training.setup import open_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("val_samples")
    parser.add_argument("--order", choices=CDF_ORDERS, default=None, help="default: the checkpoint's")
    parser.add_argument("--rows", type=int, default=32, help="validation rows of 256 tokens")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = PTPModel.from_pretrained(args.checkpoint).eval()
    sampling = replace(model.cfg.sampling, order=args.order or model.cfg.sampling.order)
    packing = PackingConfig(seq_len=256, rows=4)
    data = open_data(DataConfig(train=args.val_samples, val=args.val_samples, val_rows=args.rows), packing)
    cfg = DistillConfig(objective="o-ptp" if model.cfg.mode != "c-ptp" else "c-ptp", windows_per_row=32)
    length = model.cfg.window
    counts = torch.zeros(4, length)  # right | top, n | top, right | other, n | other
    leading = []
    with torch.no_grad():
        for batch in data.val_batches:
            ev = eval_pass(model, batch, cfg, sampling)  # the validation pass training reports
            slots, right = ev.slots, ev.right
            rows = (ev.windows.targets - 1).clamp(min=0)
            top = ev.teacher.q.argmax(-1).gather(1, rows.flatten(1)).view_as(slots.targets)
            is_top, other = (top == slots.targets) & slots.valid, (top != slots.targets) & slots.valid
            for k, (hit, pool) in enumerate(((right & is_top, is_top), (right & other, other))):
                counts[2 * k] += hit.flatten(0, 1).sum(0)
                counts[2 * k + 1] += pool.flatten(0, 1).sum(0)
            full = slots.valid.all(-1)
            leading.append(right.long().cumprod(-1).sum(-1)[full])
    mean = torch.cat(leading).float().mean()
    print(f"{args.checkpoint} (order {sampling.order}): mean leading correct {mean:.3f} "
          f"over {sum(len(x) for x in leading)} windows")
    print("slot                 " + " ".join(f"{j:6d}" for j in range(length)))
    print("P(teacher's argmax)  " + " ".join(f"{x:6.3f}" for x in (counts[1] / (counts[1] + counts[3])).tolist()))
    print("accuracy | argmax    " + " ".join(f"{x:6.3f}" for x in (counts[0] / counts[1]).tolist()))
    print("accuracy | other     " + " ".join(f"{x:6.3f}" for x in (counts[2] / counts[3]).tolist()))


if __name__ == "__main__":
    main()
