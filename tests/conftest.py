"""Tiny random teachers (built locally, saved and loaded by path) shared by the tests."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

import ptp
from ptp.head import HeadConfig
from ptp.testing import TINY_VOCAB, randomize_adapters, tiny_teacher

VOCAB = TINY_VOCAB


@functools.cache
def _cached_ptp(family: str, mode: str, seed: int, sharpness: float, window: int,
                first_slot_token: bool) -> ptp.PTPModel:
    model = ptp.PTPModel.from_teacher(tiny_teacher(family, seed, sharpness), mode=mode, lora_rank=4, window=window,
                                      first_slot_token=first_slot_token)
    randomize_adapters(model, seed)
    return model.eval()


def ptp_model(family="llama", mode="o-ptp", seed=0, sharpness=1.0, window=8, first_slot_token=False) -> ptp.PTPModel:
    """A cached PTP model with random adapters (do not mutate it in tests)."""
    return _cached_ptp(family, mode, seed, sharpness, window, first_slot_token)


def head_model(family="llama", mode="o-ptp", vocab=0, layers=1, window=4, sharpness=4.0, seed=0, order="id"):
    """A feature-head PTP model with a randomly perturbed head (a fresh one per call)."""
    teacher = tiny_teacher(family, sharpness=sharpness)
    torch.manual_seed(seed)
    model = ptp.PTPModel.from_teacher(teacher, mode=mode, drafter="head", window=window, embedding="arith",
                                      head=HeadConfig(layers=layers, draft_vocab=vocab),
                                      sampling=ptp.SamplingConfig(order=order))
    with torch.no_grad():  # random, not identity, so drafts really vary with u and context
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture
def saved_teacher(tmp_path):
    """Factory: save a tiny teacher of a family to a temp dir, return (path, model)."""

    def make(family: str = "llama", seed: int = 0):
        model = tiny_teacher(family, seed)
        path = tmp_path / f"{family}-{seed}"
        model.save_pretrained(path)
        return path, copy.deepcopy(model)

    return make
