"""Tiny random teachers (built locally, saved and loaded by path) shared by the tests."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import ptp

VOCAB = 48
FAMILIES = ("llama", "qwen2", "gpt2")


def tiny_config(family: str, vocab: int = VOCAB, max_positions: int = 256):
    common = dict(vocab_size=vocab, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if family == "llama":
        return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=max_positions, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=max_positions, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=max_positions, resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0, **common)
    raise ValueError(family)


MODEL_CLASSES = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "gpt2": GPT2LMHeadModel}


def tiny_teacher(family: str, seed: int = 0, sharpness: float = 1.0, max_positions: int = 256):
    """A random tiny causal LM; sharpness > 1 scales the LM head for low-entropy distributions."""
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family]._from_config(tiny_config(family, max_positions=max_positions),
                                               attn_implementation="sdpa").eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharpness)
    return model


@functools.cache
def _cached_ptp(family: str, mode: str, seed: int, sharpness: float, window: int) -> ptp.PTPModel:
    model = ptp.PTPModel.from_teacher(tiny_teacher(family, seed, sharpness), mode=mode, lora_rank=4, window=window)
    randomize_adapters(model, seed)
    return model.eval()


def randomize_adapters(model: ptp.PTPModel, seed: int, std: float = 0.2) -> None:
    """Give the (zero-initialised) adapters random weights so u-slots really differ from the teacher."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.lora.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def ptp_model(family="llama", mode="o-ptp", seed=0, sharpness=1.0, window=8) -> ptp.PTPModel:
    """A cached PTP model with random adapters (do not mutate it in tests)."""
    return _cached_ptp(family, mode, seed, sharpness, window)


@pytest.fixture
def saved_teacher(tmp_path):
    """Factory: save a tiny teacher of a family to a temp dir, return (path, model)."""

    def make(family: str = "llama", seed: int = 0):
        model = tiny_teacher(family, seed)
        path = tmp_path / f"{family}-{seed}"
        model.save_pretrained(path)
        return path, copy.deepcopy(model)

    return make


class CharTokenizer:
    """Stand-in tokenizer for stop-string tests: token i decodes to one letter."""

    def decode(self, ids) -> str:
        return "".join(chr(ord("a") + int(i) % 26) for i in ids)
