"""Lossless decoding with a PTP model: ``generate`` and its streaming form ``generate_stream``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import ParamSpec

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

    For one seed every method yields exactly the tokens of ``ar``. ``generate`` takes the same arguments
    and returns the whole result.

    method: "ar", "draft-verify" or "pqd"; None = the model's fastest (``PTPModel.default_method``).

    sampling defaults to the SamplingConfig the model was distilled at. slot_budget (None: the model's
    tuned budget), max_group_slots, draft_len (0: the model's): see DecodeConfig. stop_strings need the
    tokenizer. eos_token_id defaults to the teacher's; drafter to the model's own (PTPDrafter).
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


_P = ParamSpec("_P")


def _collected(stream: Callable[_P, Iterator[Chunk]]) -> Callable[_P, GenerateOutput]:
    """A function with ``stream``'s parameters that runs the stream to the end (``collect``)."""

    def run(*args: _P.args, **kwargs: _P.kwargs) -> GenerateOutput:
        return collect(stream(*args, **kwargs))

    # help() and editors that read the runtime signature show stream's parameters, not *args/**kwargs.
    run.__signature__ = inspect.signature(stream).replace(return_annotation="GenerateOutput")  # type: ignore[attr-defined]
    return run


generate = _collected(generate_stream)
generate.__name__ = generate.__qualname__ = "generate"
generate.__doc__ = """Generate new tokens; for one seed every method returns exactly the tokens of ``ar``.

    Takes ``generate_stream``'s arguments (documented there) and runs it to the end: the new tokens,
    call counts and timings as a GenerateOutput.
    """
