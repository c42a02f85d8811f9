"""Tiny random models for tests, sweeps and examples (no downloads: configs built locally)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from ptp.model import PTPModel
from ptp.sampling import SamplingConfig

TINY_VOCAB = 48
FAMILIES = ("llama", "qwen2", "gpt2")
MODEL_CLASSES = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "gpt2": GPT2LMHeadModel}


def tiny_config(family: str, vocab: int = TINY_VOCAB, max_positions: int = 256):
    """A 2-layer, hidden-32 config of a model family (dropout off)."""
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
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


def tiny_teacher(family: str, seed: int = 0, sharpness: float = 1.0, max_positions: int = 256):
    """A random tiny causal LM; sharpness > 1 scales the LM head for low-entropy distributions."""
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family]._from_config(tiny_config(family, max_positions=max_positions),
                                               attn_implementation="sdpa").eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharpness)
    return model


def randomize_adapters(model: PTPModel, seed: int, std: float = 0.2) -> None:
    """Give the (zero-initialised) adapters random weights so u-slots really differ from the teacher."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.lora.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


class CharTokenizer:
    """Stand-in tokenizer for stop-string tests: token i decodes to one letter."""

    def decode(self, ids) -> str:
        return "".join(chr(ord("a") + int(i) % 26) for i in ids)


CODE_SNIPPETS = (
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    x: int = 0\n    y: int = 0\n",
    "for i in range(10):\n    print(i)\n",
)


def tiny_checkpoint(directory, mode: str = "o-ptp", seed: int = 0, texts=CODE_SNIPPETS, order: str = "id"):
    """A complete loadable PTP checkpoint: byte-level BPE tokenizer, tiny Llama teacher in teacher/,
    random adapters, and a prompts.jsonl. Returns the tokenizer."""
    from ptp.data.tokenizer import TokenizerConfig, build_bpe

    out = Path(directory)
    tokenizer = build_bpe(list(texts) * 20, TokenizerConfig(vocab_size=300, min_frequency=1))
    teacher = tiny_teacher("llama", seed)
    teacher.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    teacher.config.eos_token_id = tokenizer.eos_token_id
    model = PTPModel.from_teacher(teacher, mode=mode, lora_rank=4, window=8, sampling=SamplingConfig(order=order))
    randomize_adapters(model, seed + 1)
    model.save_pretrained(out, include_teacher=True)
    tokenizer.save_pretrained(out)
    with open(out / "prompts.jsonl", "w") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": f"p{i}", "prompt": text[:12], "reference": text[12:]}) + "\n")
    return tokenizer


SERVE_PROMPTS = (  # the load test's prompts (scripts/load_test.py); the serve checkpoint's tokenizer knows them
    "def add(a, b):\n",
    "import os\n\nclass Path:\n",
    "# héllo wörld ✓\nfor i in range(10):\n",
    "def fib(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
)
SERVE_CORPUS = (*SERVE_PROMPTS, "    return a + b\n", "print('done')  # 你好\n", "while True:\n    pass\n")
SERVE_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_serve_checkpoint(directory, chat_template: str | None = SERVE_CHAT_TEMPLATE, max_positions: int = 2048,
                          eos: bool = True) -> Path:
    """A complete PTP checkpoint for the server's tests and load test: tiny random Llama in teacher/ and a
    byte-level BPE tokenizer (no BOS, ``<|eos|>``, non-ASCII text) with a chat template (None: without).

    eos=False: the teacher has no EOS token, so every generation runs to max_tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|eos|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(SERVE_CORPUS) * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eos|>")
    if chat_template:
        tokenizer.chat_template = chat_template
    config = tiny_config("llama", vocab=len(tokenizer), max_positions=max_positions)
    config.eos_token_id = tokenizer.eos_token_id if eos else None
    torch.manual_seed(0)
    teacher = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    model = PTPModel.from_teacher(teacher, mode="o-ptp", lora_rank=4, window=4)
    randomize_adapters(model, seed=0)
    model.save_pretrained(directory, include_teacher=True)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def launch_processes(processes: int, *args: str, timeout: float = 300) -> dict:
    """Run ``ptp ARGS`` (a training command) in ``processes`` CPU processes through ``accelerate launch``;
    returns the JSON summary the main process prints, or raises with the end of stderr if it failed.

    accelerate's ``--cpu`` flag starts a single process; its torchrun launcher (``--multi_gpu``) starts
    several, which pick the gloo backend on a machine without CUDA.
    """
    launcher = Path(sys.executable).parent / "accelerate"
    command = [str(launcher), "launch", "--num_processes", str(processes), "--multi_gpu", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ptp.cli", "--threads", "1", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:1])} over {processes} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout[done.stdout.index("{"):])
