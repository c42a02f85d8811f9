"""Copy a trained feature head into the package: float16 weights, the registry teacher, demo prompts.

  python experiments/feature_head/ship.py RUN/best src/ptp/assets/smollm2-head [--prompts FILE]

The checkpoint must have been trained on the default teacher (its fingerprint is checked against the
registry's conversion), so the shipped ptp_config.json names `smollm2-135m-instruct`, not a local path.
"""

import argparse
import shutil
from pathlib import Path

import torch

import ptp
from ptp.teachers import DEFAULT_TEACHER

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("out")
p.add_argument("--prompts", default=None, help="prompts.jsonl to ship (default: keep OUT's)")
args = p.parse_args()
model = ptp.PTPModel.from_pretrained(args.checkpoint, teacher=DEFAULT_TEACHER)
out = Path(args.out)
keep = (out / "prompts.jsonl").read_text() if (out / "prompts.jsonl").is_file() else None
if out.exists():
    shutil.rmtree(out)
model.save_pretrained(out, storage_dtype=torch.float16)
if args.prompts:
    shutil.copy(args.prompts, out / "prompts.jsonl")
elif keep is not None:
    (out / "prompts.jsonl").write_text(keep)
size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
print(f"wrote {out} ({size:.1f} MiB), teacher {model.cfg.to_dict()['drafter']} on {DEFAULT_TEACHER}")
