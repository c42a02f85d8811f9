"""Decoding methods under benchmark, behind one interface: ``run(prompt_ids, sampling, seed) -> Run``.

ptp methods (``ar``, ``draft-verify``, ``pqd``, ``mtp``) go through ``ptp.generate``; the Hugging Face
baselines (``ar-hf``, ``pld`` prompt lookup, ``sps`` a small draft model through assisted generation)
go through ``generate`` on a hook-free copy of the teacher, with a forward counter for MAT. The llama.cpp
peers (``llama-cpp``, ``llama-cpp-pld``) are in ``ptp.bench.llama_cpp``. Each method says what weights it
computes with (``weights``, e.g. "float32, dequantised from Q4_1 GGUF"): the report shows it per row.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

import ptp
from ptp.decoding import METHODS
from ptp.model import PTPModel
from ptp.sampling import SamplingConfig

PLD_TOKENS = 10  # prompt-lookup candidate length (HF's default)
LOSSLESS = (*METHODS, "mtp")  # ptp decoding (mtp: the u-blind control's drafter): equal to ``ar`` token for token
HF_METHODS = ("ar-hf", "pld", "sps")  # Hugging Face generate baselines


@dataclass(frozen=True)
class Run:
    """One method on one prompt."""

    tokens: list[int]
    teacher_calls: int  # verifying calls after the prefill (MAT's denominator)
    seconds: float  # wall time, prefill included
    first_token_seconds: float
    per_call: tuple[int, ...] = ()  # tokens emitted by each teacher call (ptp methods only)


def plain_teacher(model: PTPModel) -> PreTrainedModel:
    """A copy of the teacher without the adapter hooks: what a user of plain HF would run."""
    clean = copy.deepcopy(model.teacher)
    for module in clean.modules():
        module._forward_hooks.clear()
    return clean.eval()


class PTPMethod:
    """``ptp.generate`` with a fixed method and slot budget."""

    def __init__(self, model: PTPModel, method: str, slot_budget: int | None, eos_ids: list[int],
                 weights: str = "") -> None:
        self.model, self.method, self.slot_budget, self.eos_ids = model, method, slot_budget, eos_ids
        self.weights = weights

    def run(self, prompt: list[int], max_new_tokens: int, sampling: SamplingConfig, seed: int) -> Run:
        start = time.perf_counter()
        out = ptp.generate(self.model, prompt, max_new_tokens, sampling, seed, self.method,
                           slot_budget=self.slot_budget, eos_token_id=self.eos_ids)
        seconds = time.perf_counter() - start
        return Run(out.tokens.tolist(), out.teacher_calls, seconds, out.first_token_seconds,
                   tuple(out.accepted_per_call))


class _FirstTokenTimer:
    """HF streamer that records when the first new token arrives (the first put() is the prompt)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self._puts = 0

    def put(self, _value) -> None:
        self._puts += 1
        if self._puts == 2 and self.first is None:
            self.first = time.perf_counter() - self.start

    def end(self) -> None:
        pass


class HFMethod:
    """HF ``generate``: plain (ar-hf), prompt lookup (pld) or with an assistant model (sps)."""

    def __init__(self, teacher: PreTrainedModel, eos_ids: list[int], pld: bool = False, assistant=None,
                 weights: str = "") -> None:
        self.teacher, self.eos_ids, self.pld, self.assistant = teacher, eos_ids, pld, assistant
        self.weights = weights
        self.calls = 0
        teacher.register_forward_hook(self._count)

    def _count(self, *_args) -> None:
        self.calls += 1

    @torch.no_grad()
    def run(self, prompt: list[int], max_new_tokens: int, sampling: SamplingConfig, seed: int) -> Run:
        torch.manual_seed(seed)
        ids = torch.tensor([prompt], device=self.teacher.device)
        kwargs = {"do_sample": False} if sampling.greedy else {
            "do_sample": True, "temperature": sampling.temperature, "top_k": sampling.top_k or None,
            "top_p": sampling.top_p,
        }
        if self.pld:
            kwargs["prompt_lookup_num_tokens"] = PLD_TOKENS
        if self.assistant is not None:
            kwargs["assistant_model"] = self.assistant
        self.calls = 0
        timer = _FirstTokenTimer()
        out = self.teacher.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    eos_token_id=self.eos_ids or None, pad_token_id=(self.eos_ids or [0])[0],
                                    streamer=timer, **kwargs)
        seconds = time.perf_counter() - timer.start
        tokens = out[0, len(prompt):].tolist()
        # HF's prefill call already yields the first token, so every call counts (plain generate: MAT 1.00).
        return Run(tokens, max(self.calls, 1), seconds, timer.first or seconds)
