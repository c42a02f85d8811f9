"""Does a trained inverse-AR C-PTP adapter use its u's?

Slot perplexity on the validation rows (the training CLI's rows: 16 rows of 256, 32 windows each,
uniform z) with (a) the u's found from the model's own CDFs (the validation metric) and (b) the same
slots fed the u's of another window (right marginal, wrong information), next to the teacher's
perplexity on the same target tokens. (a) close to (b) means the u's carry little for the adapter.

usage: python scripts/iar_u_ablation.py ADAPTER_DIR [VAL_SHARDS]
"""

import math
import sys

import torch

from ptp.decoding.step import crop_cache
from ptp.model import PTPModel
from ptp.training.objectives import inverse_ar_us, slot_inputs, teacher_pass, window_pass
from ptp.training.packing import DataConfig, PackingConfig
from ptp.training.setup import open_data
from ptp.training.windows import EVAL_STREAM, UNIFORM, choose_windows


def main() -> None:
    torch.set_num_threads(1)
    src = sys.argv[1]
    val = sys.argv[2] if len(sys.argv) > 2 else "data/iar-shards512/val"
    model = PTPModel.from_pretrained(src).eval()
    data = open_data(DataConfig(train=val, val=val, val_rows=16), PackingConfig(seq_len=256, rows=4))
    tot = {"own": 0.0, "shuffled": 0.0, "teacher": 0.0, "n": 0.0}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in data.val_batches:
            teacher = teacher_pass(model, batch, model.cfg.sampling)
            windows = choose_windows(batch, 32, model.cfg.window, 1, UNIFORM, 0, EVAL_STREAM)
            slots = slot_inputs(batch, windows, teacher)
            u = inverse_ar_us(model, batch, windows, slots.u[:, :, 0], slots.targets, teacher.cache)
            valid = slots.valid
            rows = (windows.targets - 1).clamp(min=0).flatten(1)
            q = teacher.q.gather(1, rows[:, :, None].expand(-1, -1, teacher.q.shape[-1]))
            q = q.gather(-1, slots.targets.flatten(1)[:, :, None]).view_as(u)
            tot["teacher"] += float(-torch.log(q[valid]).sum())
            tot["n"] += float(valid.sum())
            perm = torch.randperm(u.shape[0] * u.shape[1], generator=gen)
            for name, uu in (("own", u), ("shuffled", u.flatten(0, 1)[perm].view_as(u))):
                logits = window_pass(model, batch, windows, uu, teacher.cache)
                crop_cache(teacher.cache, batch.tokens.shape[1])
                logp = torch.log_softmax(logits.float(), -1).gather(-1, slots.targets[..., None]).squeeze(-1)
                tot[name] += float(-logp[valid].sum())
    ppl = {k: round(math.exp(tot[k] / tot["n"]), 3) for k in ("own", "shuffled", "teacher")}
    print(src, ppl, "slots", int(tot["n"]))


if __name__ == "__main__":
    main()
