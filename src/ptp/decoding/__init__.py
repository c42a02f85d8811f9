"""Lossless decoding with a PTP model: ``generate`` and its streaming form ``generate_stream``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ptp.decoding.drafters import Drafter, OracleDrafter, PTPDrafter
from ptp.decoding.loop import collect, decode
from ptp.decoding.types import METHODS, Chunk, DecodeConfig, Draft, GenerateOutput, Verdict
from ptp.model import PTPModel
from ptp.sampling import SamplingConfig

__all__ = [
    "METHODS",
    "Chunk",
    "DecodeConfig",
    "Draft",
    "Drafter",
    "GenerateOutput",
    "OracleDrafter",
    "PTPDrafter",
    "Verdict",
    "generate",
    "generate_stream",
]


def generate_stream(
    model: PTPModel,
    input_ids: torch.Tensor | Sequence[int],
    max_new_tokens: int = 128,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    method: str | None = None,
    *,
    slot_budget: int | None = None,
    max_group_slots: int = 0,
    draft_len: int = 0,
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    eos_token_id: int | list[int] | None = None,
    drafter: Drafter | None = None,
) -> Iterator[Chunk]:
    """Yield each call's verified tokens as soon as they are verified (first chunk: the prefill).

    ``sampling`` defaults to the SamplingConfig the model was distilled at and ``slot_budget`` to the
    model's tuned budget. Same arguments as ``generate``.
    """
    cfg = DecodeConfig(
        method=method or model.default_method,
        max_new_tokens=max_new_tokens,
        slot_budget=model.cfg.slot_budget if slot_budget is None else slot_budget,
        max_group_slots=max_group_slots,
        draft_len=draft_len or model.cfg.draft_len,
        stop_strings=tuple(stop_strings),
    )
    sampling = sampling or model.cfg.sampling
    return decode(model, input_ids, cfg, sampling, seed, drafter, tokenizer, eos_token_id)


def generate(
    model: PTPModel,
    input_ids: torch.Tensor | Sequence[int],
    max_new_tokens: int = 128,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    method: str | None = None,
    *,
    slot_budget: int | None = None,
    max_group_slots: int = 0,
    draft_len: int = 0,
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    eos_token_id: int | list[int] | None = None,
    drafter: Drafter | None = None,
) -> GenerateOutput:
    """Generate new tokens; for one seed every method returns exactly the tokens of ``ar``.

    method: "ar", "draft-verify" or "pqd"; None = the model's fastest (``PTPModel.default_method``).

    slot_budget (None: the model's), max_group_slots, draft_len (0: the model's): see DecodeConfig. stop_strings need
    the tokenizer.
    eos_token_id defaults to the teacher's; drafter to the model's own (PTPDrafter).
    """
    stream = generate_stream(
        model, input_ids, max_new_tokens, sampling, seed, method,
        slot_budget=slot_budget, max_group_slots=max_group_slots, draft_len=draft_len,
        stop_strings=stop_strings, tokenizer=tokenizer, eos_token_id=eos_token_id, drafter=drafter,
    )
    return collect(stream)
