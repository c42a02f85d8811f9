"""The feature-head path on a device, end to end on a tiny random teacher (seconds): `ptp features`,
`ptp train-head` in o-ptp and mtp with --decay-by-time, --resume, and the shipped float16 copy.

  python experiments/feature_head/gpu/smoke.py cuda     (run.sh check runs it before the real job)
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer

import ptp
from ptp.cli import main
from ptp.testing import tiny_serve_checkpoint

device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
with tempfile.TemporaryDirectory() as scratch:
    tmp = Path(scratch)
    teacher = tiny_serve_checkpoint(tmp / "ck") / "teacher"
    AutoTokenizer.from_pretrained(tmp / "ck").save_pretrained(teacher)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"def add{i}(a, b):\n"}) + "\n" for i in range(40)))
    feats = tmp / "features"
    assert main(["--threads", "1", "features", "--device", device, "--teacher", str(teacher), "--prompts",
                 str(prompts), "--out", str(feats), "--max-new-tokens", "12", "--batch-size", "20"]) == 0
    common = ["--threads", "1", "train-head", "--device", device, "--features", str(feats), "--teacher",
              str(teacher), "--val-rows", "8", "--window", "4", "--draft-vocab", "0", "--eval-every", "5",
              "--rows-per-step", "4", "--windows-per-row", "8", "--time-limit", "60", "--decay-by-time"]
    for mode in ("o-ptp", "mtp"):
        run = tmp / mode
        assert main([*common, "--mode", mode, "--out", str(run), "--steps", "10"]) == 0
        assert main([*common, "--mode", mode, "--out", str(run), "--steps", "15", "--resume"]) == 0
        model = ptp.PTPModel.from_pretrained(run / "best", teacher=teacher)
        model.save_pretrained(tmp / f"{mode}-f16", storage_dtype=torch.float16)
        print(f"{mode}: {(run / 'eval.csv').read_text().splitlines()[-1]}", flush=True)
print(f"smoke test on {device}: ok")
