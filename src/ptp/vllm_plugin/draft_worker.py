"""A ptp drafter as a line-oriented worker, run in ptp's own environment (transformers 5.24).

vLLM 0.32 needs transformers < 5.20, so the proposer inside vLLM (``ptp.vllm_plugin.proposer``) runs
the drafter here, with ptp's interpreter (``python -m ptp.vllm_plugin.draft_worker --model HEAD``),
and talks JSON lines over stdin/stdout.

Request:  {"contexts": [[token ids], ...], "u": [[u of each draft slot], ...],
           "sampling": [SamplingConfig dict or null, ...],     (optional, read by the oracle)
           "features": [{"start": position, "rows": q, "data": base64 float32 [q, H]} or null, ...]}
                                                               (optional: vLLM's last hidden states)
Answer:   {"drafts": [[one token per u], ...], "new_tokens": context tokens the head read for the first
           time, "teacher_tokens": tokens the worker's own teacher ran for lack of vLLM's features}

Each context ends with its pending token (sampled, not yet seen by the teacher). The O-PTP / MTP
head drafts one token per u (``PTPDrafter``: the argmax of each slot). ``--drafter oracle`` drafts
the teacher's own picks under the same u's instead (``OracleDrafter``: the perfect PTP drafter, at
the price of one teacher pass per draft): the ceiling any drafter can reach, for measurements.

The proposer sees no request ids, so the worker keys its state by content: it keeps the teacher's KV
cache and features of recent contexts (``IncrementalDrafter``) and extends the longest one that is a
prefix of the new context (committed tokens never change), so a step costs the new tokens only. When
vLLM's own hidden states of the new tokens come with the request (what the teacher computed this step,
``features``), the head reads those and the worker's teacher runs nothing; its cache catches up only
when they are missing (a prefix-cache hit, a context the worker has not seen).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass

import torch

import ptp
from ptp.decoding.batching import drive
from ptp.decoding.drafters import OracleDrafter, PTPDrafter
from ptp.decoding.row_cache import RowCache
from ptp.decoding.step import head_draft, prefill_call
from ptp.sampling import SamplingConfig
from ptp.vllm_plugin.wire import Features, decode_features


@torch.no_grad()
def drafts_from_scratch(model: ptp.PTPModel, context: list[int], u: torch.Tensor) -> list[int]:
    """The head's drafts after ``context`` (the last token is the pending one) for slot u's ``u``, uncached."""
    return IncrementalDrafter(model, capacity=1).draft(context, u)


def _covering(features: Features | None, start: int, n: int) -> torch.Tensor | None:
    """Rows for positions start..start+n-1 when ``features`` hold them all, else None."""
    if features is None:
        return None
    first, rows = features
    offset = start - first
    return rows[offset : offset + n] if offset >= 0 and offset + n <= rows.shape[0] else None


@dataclass
class _Context:
    """A context the teacher has cached: its tokens, cache rows and the features the head has not read."""

    tokens: list[int]  # read by the head (a context without its pending token)
    row: int  # teacher RowCache row: holds the first ``teacher_len`` tokens
    head_row: int  # head RowCache row
    unread: torch.Tensor  # [C, H] teacher features not yet in the head's cache
    last: torch.Tensor  # [H] the teacher's feature of the last cached token
    teacher_len: int = 0  # tokens in the worker's own teacher cache (a prefix of ``tokens``)


class IncrementalDrafter:
    """Head drafts for contexts that grow between calls, extending cached prefixes."""

    def __init__(self, model: ptp.PTPModel, capacity: int = 64) -> None:
        if not model.is_head:
            raise ValueError("the worker drafts with a feature-head drafter (drafter='head')")
        if model.cfg.slot_offset:
            raise ValueError("the worker drafts with an O-PTP or MTP head (a C-PTP head picks with u's it is not sent)")
        self.drafter = PTPDrafter(model)
        self.model, self.capacity = model, capacity
        self.teacher_rows, self.head_rows = RowCache(), RowCache()
        self.contexts: OrderedDict[int, _Context] = OrderedDict()  # least recently used first
        self._next = 0
        self.new_tokens = 0  # context tokens the head read for the first time
        self.teacher_tokens = 0  # tokens the worker's own teacher ran (vLLM's features spare the rest)

    @torch.no_grad()
    def draft(self, context: list[int], u: torch.Tensor, given: Features | None = None) -> list[int]:
        """One token per u in ``u`` [k], for the positions after ``context``; ``given``: teacher features of
        some of its positions (vLLM's), used for the new tokens when they cover them. With no u the new
        tokens are only read (kept for the head's next call)."""
        cached = self._claim(context[:-1])
        new = context[len(cached.tokens) : -1]
        if new:
            self.new_tokens += len(new)
            features = _covering(given, len(cached.tokens), len(new))
            if features is None:  # the worker's teacher catches up on everything it has not run
                behind = context[cached.teacher_len : -1]
                features = drive(self.model, prefill_call(self.teacher_rows.view(cached.row), behind))[-len(new) :]
                cached.teacher_len += len(behind)
                self.teacher_tokens += len(behind)
            cached.unread = torch.cat([cached.unread, features.to(cached.unread.dtype)])
            cached.last, cached.tokens = features[-1], cached.tokens + new
        if not len(u):
            self._keep(cached)
            return []
        logits = drive(self.model, head_draft(self.model, self.head_rows.view(cached.head_row), cached.unread,
                                              cached.last, context[-1], len(cached.tokens), u))
        cached.unread = cached.unread[:0]
        self._keep(cached)
        return self.drafter.propose(logits, 0, context, None).tokens.tolist()

    def _claim(self, prefix: list[int]) -> _Context:
        """Take the cached context that is the longest prefix of ``prefix`` out of the pool, or a new one."""
        best = None
        for key, item in self.contexts.items():
            n = len(item.tokens)
            if n <= len(prefix) and item.tokens == prefix[:n] and (best is None or n > len(self.contexts[best].tokens)):
                best = key
        if best is not None:
            return self.contexts.pop(best)
        hidden = self.model.teacher.config.hidden_size
        return _Context([], self.teacher_rows.add_row(), self.head_rows.add_row(), torch.zeros(0, hidden),
                        torch.zeros(hidden))

    def _keep(self, item: _Context) -> None:
        self.contexts[self._next] = item
        self._next += 1
        while len(self.contexts) > self.capacity:
            _, old = self.contexts.popitem(last=False)
            self.teacher_rows.remove_row(old.row)
            self.head_rows.remove_row(old.head_row)


class _GivenU:
    """The u's of one request's draft slots as the u-stream ``OracleDrafter`` reads (indices from ``first``)."""

    def __init__(self, first: int, u: torch.Tensor) -> None:
        self.first, self.u = first, u

    def take(self, start: int, n: int) -> torch.Tensor:
        return self.u[start - self.first : start - self.first + n]


@torch.no_grad()
def oracle_drafts(model: ptp.PTPModel, context: list[int], u: torch.Tensor, sampling: SamplingConfig) -> list[int]:
    """The teacher's own picks after ``context`` under ``u``: what a perfect PTP drafter proposes."""
    if not len(u):
        return []
    slots = torch.zeros(len(u), model.vocab_size)
    return OracleDrafter(model, sampling).propose(slots, 0, context, _GivenU(0, u)).tokens.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a ptp feature-head checkpoint directory")
    parser.add_argument("--drafter", choices=["head", "oracle"], default="head",
                        help="the checkpoint's head, or the teacher's own picks (a ceiling: a teacher pass per draft)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ptp.PTPModel.from_pretrained(args.model).eval()
    drafter = IncrementalDrafter(model) if args.drafter == "head" else None
    print(json.dumps({"ready": True, "vocab_size": model.vocab_size}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        n = len(request["contexts"])
        samplings = request.get("sampling") or [None] * n
        given = request.get("features") or [None] * n
        drafts, before = [], (drafter.new_tokens, drafter.teacher_tokens) if drafter else (0, 0)
        for context, u, sampling, features in zip(request["contexts"], request["u"], samplings, given, strict=True):
            u = torch.tensor(u, dtype=torch.float32)
            if drafter is not None:
                drafts.append(drafter.draft(context, u, decode_features(features)))
            else:  # the sampling the request is verified with; without one, the one the model was trained at
                cfg = SamplingConfig.from_dict(sampling) if sampling else model.cfg.sampling
                drafts.append(oracle_drafts(model, context, u, cfg))
        new, ran = (drafter.new_tokens - before[0], drafter.teacher_tokens - before[1]) if drafter else (0, 0)
        print(json.dumps({"drafts": drafts, "new_tokens": new, "teacher_tokens": ran}), flush=True)


if __name__ == "__main__":
    main()
