"""Drafters: turn a hypothesis group's slot logits into draft tokens.

A drafter implements one method, ``propose``. The slots of a group anchored at generated index A
carry u_A, u_{A+1}, ...; O-PTP slot i predicts token A+i (argmax), C-PTP slot i predicts token A+1+i
(picked from its distribution with u_{A+1+i}).

``OracleDrafter`` ignores the logits and returns the teacher's own future tokens (optionally
corrupted at a given rate): an upper bound for benchmarks, and the drafter that exercises
multi-token acceptance in the tests.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ptp.decoding.types import Draft
from ptp.model import PTPModel
from ptp.sampling import SamplingConfig, pick, process
from ptp.ustream import UStream


class Drafter(Protocol):
    def propose(
        self,
        slot_logits: torch.Tensor,  # [b, V] logits of the group's u-slots
        anchor: int,  # generated index of the group's first u (the token the group assumes next)
        context: list[int],  # all tokens (prompt + generated) before index ``anchor``
        ustream: UStream,
    ) -> Draft: ...


class PTPDrafter:
    """The model's own drafts: argmax for O-PTP/MTP, pick(u, P) for C-PTP."""

    def __init__(self, model: PTPModel, order: str = "id") -> None:
        self.slot_offset = model.cfg.slot_offset
        self.order = order  # the CDF order C-PTP drafts are picked in: the decoding sampling's

    def propose(self, slot_logits, anchor, context, ustream) -> Draft:
        probs = torch.softmax(slot_logits.float(), dim=-1)  # [b, V]
        if self.slot_offset:  # C-PTP: slot i's distribution is of token anchor + 1 + i, picked with its u
            u = ustream.take(anchor + 1, slot_logits.shape[0]).to(probs.device)
            tokens = pick(u, probs, self.order)
            return Draft(anchor + 1, tokens, probs.gather(-1, tokens[:, None])[:, 0])
        confidence, tokens = probs.max(-1)
        return Draft(anchor, tokens, confidence)


class OracleDrafter:
    """Drafts the teacher's true future (teacher AR with the same u's); wrong at ``error_rate``."""

    def __init__(self, model: PTPModel, sampling: SamplingConfig, error_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate!r}")
        self.teacher = model.teacher
        self.sampling = sampling
        self.error_rate = error_rate
        self.slot_offset = model.cfg.slot_offset
        self._rng = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def propose(self, slot_logits, anchor, context, ustream) -> Draft:
        n = slot_logits.shape[0]
        first = anchor + self.slot_offset
        prompt_len = len(context) - anchor
        seq = list(context)
        for index in range(anchor, first + n):
            logits = self.teacher(torch.tensor([seq], device=self.teacher.device)).logits[0, -1]
            seq.append(int(pick(ustream.take(index, 1)[0], process(logits, self.sampling), self.sampling.order)))
        tokens = torch.tensor(seq[prompt_len + first :])
        vocab = slot_logits.shape[-1]
        wrong = torch.rand(n, generator=self._rng) < self.error_rate
        shifted = (tokens + 1 + torch.randint(vocab - 1, (n,), generator=self._rng)) % vocab
        tokens = torch.where(wrong, shifted, tokens)
        return Draft(first, tokens, torch.full((n,), 1.0 - self.error_rate))
