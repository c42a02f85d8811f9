"""A ptp drafter as a line-oriented worker, run in ptp's own environment (transformers 5.24).

vLLM 0.32 needs transformers < 5.20, so the proposer inside vLLM (``ptp_vllm.proposer``) does not
import ptp: it starts this script with ptp's interpreter and talks JSON lines over stdin/stdout.

Request:  {"contexts": [[token ids], ...], "k": 3}
Answer:   {"drafts": [[k token ids], ...]}

Drafts are the feature head's greedy chain (u = 0 in the model's most-likely-first CDF order): what
a PTP drafter proposes under greedy decoding, and a u-blind proposal under sampling. Each call
recomputes the teacher's features of the whole context (no state between calls: the proposer does
not see request ids), so it is correct but not fast.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import ptp
from ptp.decoding.batching import drive
from ptp.decoding.row_cache import RowCache
from ptp.decoding.step import head_draft, prefill_call


@torch.no_grad()
def greedy_drafts(model: ptp.PTPModel, context: list[int], k: int) -> list[int]:
    """The head's k-token greedy draft after ``context`` (the last token is the pending one)."""
    if not model.is_head:
        raise ValueError("the worker drafts with a feature-head drafter (drafter='head')")
    teacher_rows, head_rows = RowCache(), RowCache()
    cache = teacher_rows.view(teacher_rows.add_row())
    hidden = model.teacher.config.hidden_size
    features = drive(model, prefill_call(cache, context[:-1])) if len(context) > 1 else torch.zeros(0, hidden)
    last = features[-1] if len(features) else torch.zeros(hidden)
    u = torch.zeros(k)  # greedy: u = 0 asks for the most likely token at every slot
    logits = drive(model, head_draft(model, head_rows.view(head_rows.add_row()), features, last, context[-1],
                                     len(context) - 1, u))
    return logits.argmax(-1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a ptp feature-head checkpoint directory")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ptp.PTPModel.from_pretrained(args.model).eval()
    print(json.dumps({"ready": True, "vocab_size": model.vocab_size}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        drafts = [greedy_drafts(model, context, int(request["k"])) for context in request["contexts"]]
        print(json.dumps({"drafts": drafts}), flush=True)


if __name__ == "__main__":
    main()
