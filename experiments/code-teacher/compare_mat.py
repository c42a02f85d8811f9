"""Mean accepted tokens per call (MAT) of several drafter checkpoints on the same held-out prompts.

Each checkpoint decodes in its own CDF order with PQD (slot budgets 2 and 16) and draft-verify,
T=0.7 / top-k 50 / top-p 0.95, seed i for prompt i: the MAT columns of the README's order table.
Usage: python scripts/compare_mat.py CHECKPOINT [...] [--prompts 8] [--threads 1] [--order ORDER]
                                     [--draft-rule argmax|pick]
``--draft-rule pick`` drafts an O-PTP slot as pick(u, softmax(slot logits)) instead of the argmax: the
coupling a u-blind drafter with calibrated outputs would gain from (measured: it loses; README).
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoTokenizer

import ptp
from ptp.bundled import default_model_dir
from ptp.data.prompts import read_prompts
from ptp.decoding.drafters import PTPDrafter
from ptp.decoding.types import Draft
from ptp.sampling import pick


class PickingDrafter(PTPDrafter):
    """O-PTP slots drafted as pick(u, softmax(logits)) with their own u (C-PTP drafts as usual)."""

    def propose(self, slot_logits, anchor, context, ustream) -> Draft:
        if self.slot_offset:
            return super().propose(slot_logits, anchor, context, ustream)
        probs = torch.softmax(slot_logits.float(), dim=-1)
        tokens = pick(ustream.take(anchor, slot_logits.shape[0]).to(probs.device), probs, self.order)
        return Draft(anchor, tokens, probs.gather(-1, tokens[:, None])[:, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--prompts", type=int, default=8, help="first N held-out prompts of the bundled model")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--order", choices=ptp.sampling.CDF_ORDERS, default=None,
                        help="decode in this CDF order instead of each checkpoint's own")
    parser.add_argument("--draft-rule", choices=("argmax", "pick"), default="argmax")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundled = default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(bundled)
    prompts = [tokenizer(p.prompt).input_ids for p in read_prompts(bundled / "prompts.jsonl")[: args.prompts]]
    eos = [tokenizer.eos_token_id]
    for checkpoint in args.checkpoints:
        model = ptp.PTPModel.from_pretrained(checkpoint).eval()
        order = args.order or model.cfg.sampling.order
        sampling = ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order=order)
        drafter = PickingDrafter(model, order) if args.draft_rule == "pick" else None
        cells = [checkpoint, sampling.order, args.draft_rule]
        for method, budget in (("pqd", 2), ("pqd", 16), ("draft-verify", None)):
            tokens = calls = 0
            start = time.perf_counter()
            with torch.inference_mode():
                for i, ids in enumerate(prompts):
                    out = ptp.generate(model, ids, args.max_new_tokens, sampling, i, method, slot_budget=budget,
                                       eos_token_id=eos, drafter=drafter)
                    tokens, calls = tokens + len(out.tokens), calls + out.teacher_calls
            rate = tokens / (time.perf_counter() - start)
            cells.append(f"{method}{budget or ''} MAT {tokens / calls:.3f} ({rate:.0f} tok/s)")
        print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
