"""Lossless decoding with a PTP model: ``generate`` and its streaming form ``generate_stream``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import ParamSpec

import torch

from ptp.decoding.drafters import Drafter, OracleDrafter, PTPDrafter
from ptp.decoding.loop import BatchDecoder, DecodeRequest, collect, collect_many, decode_many, prepare
from ptp.decoding.types import METHODS, Chunk, DecodeConfig, Draft, GenerateOutput, Verdict
from ptp.model import PTPModel
from ptp.sampling import SamplingConfig

__all__ = [
    "METHODS",
    "BatchDecoder",
    "Chunk",
    "DecodeConfig",
    "DecodeRequest",
    "Draft",
    "Drafter",
    "GenerateOutput",
    "OracleDrafter",
    "PTPDrafter",
    "Verdict",
    "decode_config",
    "generate",
    "generate_stream",
    "prepare",
]


def generate_stream(
    model: PTPModel,
    input_ids: torch.Tensor | Sequence[int] | Sequence[torch.Tensor | Sequence[int]],
    max_new_tokens: int | Sequence[int] = 128,
    sampling: SamplingConfig | Sequence[SamplingConfig] | None = None,
    seed: int | Sequence[int] = 0,
    method: str | None = None,
    *,
    slot_budget: int | None = None,
    max_group_slots: int = 0,
    draft_len: int = 0,
    stop_strings: Sequence[str] | Sequence[Sequence[str]] = (),
    tokenizer=None,
    eos_token_id: int | list[int] | None = None,
    drafter: Drafter | Sequence[Drafter] | None = None,
    max_batch: int = 0,
    batch_budgets: Sequence[tuple[int, int]] | None = None,
) -> Iterator[Chunk]:
    """Yield each call's verified tokens as soon as they are verified (first chunk: the prefill).

    For one seed every method yields exactly the tokens of ``ar``. ``generate`` takes the same arguments
    and returns the whole result.

    method: "ar", "draft-verify" or "pqd"; None = the model's fastest (``PTPModel.default_method``).

    sampling defaults to the SamplingConfig the model was distilled at. slot_budget (None: the model's
    tuned budget), max_group_slots, draft_len (0: the model's): see DecodeConfig; given either budget
    holds at every batch size, else the model's ``batch_budgets`` (``ptp tune --batch-sizes``) apply;
    batch_budgets (see DecodeConfig; ((1, 0),) = never draft) overrides both.
    stop_strings need the tokenizer. eos_token_id defaults to the teacher's; drafter to the model's own (PTPDrafter).

    Several prompts (a list of token lists or 1-D tensors, or a 2-D tensor with more than one row) are
    decoded as one batch, at most ``max_batch`` rows at once (0: all); max_new_tokens, sampling, seed,
    stop_strings and drafter may then be given per prompt (a sequence) or once for all. Each row emits
    exactly the tokens it would emit alone; each chunk names its prompt in ``Chunk.request``.
    """
    prompts = _prompts(input_ids)
    n = 1 if prompts is None else len(prompts)
    per_row = {
        "max_new_tokens": _per_row(max_new_tokens, n, "max_new_tokens"),
        "sampling": _per_row(sampling, n, "sampling"),
        "seed": _per_row(seed, n, "seed"),
        "stop_strings": _per_row(stop_strings, n, "stop_strings", nested=True),
        "drafter": _per_row(drafter, n, "drafter"),
    }
    requests = []
    for i, prompt in enumerate([input_ids] if prompts is None else prompts):
        cfg = decode_config(model, method, per_row["max_new_tokens"][i], slot_budget=slot_budget,
                            max_group_slots=max_group_slots, draft_len=draft_len,
                            stop_strings=per_row["stop_strings"][i], batch_budgets=batch_budgets)
        requests.append(prepare(model, prompt, cfg, per_row["sampling"][i] or model.cfg.sampling,
                                per_row["seed"][i], per_row["drafter"][i], tokenizer, eos_token_id))
    return decode_many(model, requests, max_batch)


def decode_config(
    model: PTPModel,
    method: str | None,
    max_new_tokens: int,
    *,
    slot_budget: int | None = None,
    max_group_slots: int = 0,
    draft_len: int = 0,
    stop_strings: Sequence[str] = (),
    batch_budgets: Sequence[tuple[int, int]] | None = None,
) -> DecodeConfig:
    """A DecodeConfig with the model's defaults filled in: its fastest method, tuned slot budget and draft
    length, and its per-batch-size budgets unless the caller gives a budget (which then holds at every
    batch size) or batch_budgets itself."""
    if batch_budgets is not None:
        budgets = tuple((int(b), int(k)) for b, k in batch_budgets)
    elif slot_budget is not None or draft_len:
        budgets = ()
    else:
        budgets = model.cfg.batch_budgets
    return DecodeConfig(
        method=method or model.default_method,
        max_new_tokens=max_new_tokens,
        slot_budget=model.cfg.slot_budget if slot_budget is None else slot_budget,
        max_group_slots=max_group_slots,
        draft_len=draft_len or model.cfg.draft_len,
        stop_strings=tuple(stop_strings),
        batch_budgets=budgets,
    )


def _prompts(input_ids) -> list | None:
    """The prompts of a batch, or None for a single prompt (a token list, a 1-D or a [1, N] tensor)."""
    if isinstance(input_ids, torch.Tensor):
        return list(input_ids) if input_ids.dim() == 2 and input_ids.shape[0] > 1 else None
    if isinstance(input_ids, (list, tuple)) and input_ids and all(
        isinstance(p, (list, tuple, torch.Tensor)) for p in input_ids
    ):
        return list(input_ids)
    return None


def _per_row(value, n: int, name: str, nested: bool = False) -> list:
    """One value per prompt: a list or tuple gives one per prompt, anything else is shared.

    nested (stop_strings, itself a sequence): per prompt only as a sequence of sequences.
    """
    if nested:
        per_prompt = isinstance(value, (list, tuple)) and bool(value) and all(
            isinstance(v, (list, tuple)) for v in value)
    else:
        per_prompt = isinstance(value, (list, tuple))
    if not per_prompt:
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name} must be one value or one per prompt ({n} prompts), got {len(value)} values")
    return list(value)


_P = ParamSpec("_P")


def _collected(stream: Callable[_P, Iterator[Chunk]]) -> Callable[_P, GenerateOutput | list[GenerateOutput]]:
    """A function with ``stream``'s parameters that runs the stream to the end (``collect``): one
    GenerateOutput for one prompt, a list of them (in the prompts' order) for several."""

    def run(*args: _P.args, **kwargs: _P.kwargs) -> GenerateOutput | list[GenerateOutput]:
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[1]
        prompts = _prompts(input_ids)
        chunks = stream(*args, **kwargs)
        return collect(chunks) if prompts is None else collect_many(chunks, len(prompts))

    # help() and editors that read the runtime signature show stream's parameters, not *args/**kwargs.
    run.__signature__ = inspect.signature(stream).replace(  # type: ignore[attr-defined]
        return_annotation="GenerateOutput | list[GenerateOutput]")
    return run


generate = _collected(generate_stream)
generate.__name__ = generate.__qualname__ = "generate"
generate.__doc__ = """Generate new tokens; for one seed every method returns exactly the tokens of ``ar``.

    Takes ``generate_stream``'s arguments (documented there) and runs it to the end: the new tokens,
    call counts and timings as a GenerateOutput, or a list of them (in order) for several prompts.
    """
