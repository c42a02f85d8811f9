"""Byte-level BPE tokenizer training with Hugging Face ``tokenizers``, saved as an HF fast tokenizer.

The result loads with ``AutoTokenizer.from_pretrained(dir)``. One special token, ``<|endoftext|>``,
serves as BOS, EOS and padding; encoding a text with special tokens (the default of ``tokenizer(text)``)
prepends BOS, as Llama tokenizers do, so every prompt and every training document starts the same way.
Byte-level means every byte string is encodable: there is no unknown token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
INFO_FILE = "ptp_tokenizer.json"  # how the tokenizer was trained (next to tokenizer.json)


@dataclass(frozen=True)
class TokenizerConfig:
    """Byte-level BPE training settings."""

    vocab_size: int = 8192  # including the 256 byte tokens and the special token
    min_frequency: int = 2  # a merge must occur at least this often in the training text
    add_bos: bool = True  # encoding with special tokens prepends <|endoftext|> as BOS
    max_bytes: int | None = None  # stop reading training text after this many bytes (None: all)

    def __post_init__(self) -> None:
        if self.vocab_size < len(pre_tokenizers.ByteLevel.alphabet()) + 1:
            raise ValueError(f"vocab_size must exceed the 256 byte tokens plus specials, got {self.vocab_size!r}")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency!r}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"max_bytes must be positive or None, got {self.max_bytes!r}")


def _capped(texts: Iterable[str], max_bytes: int | None, on_text: Callable[[int], None] | None) -> Iterator[str]:
    seen = 0
    for text in texts:
        if max_bytes is not None and seen >= max_bytes:
            return
        size = len(text.encode())
        seen += size
        if on_text is not None:
            on_text(size)
        yield text


def build_bpe(texts: Iterable[str], cfg: TokenizerConfig,
              on_text: Callable[[int], None] | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; ``on_text(bytes)`` is called per text read."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_capped(texts, cfg.max_bytes, on_text), trainer)
    eot = tok.token_to_id(END_OF_TEXT)
    if cfg.add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{END_OF_TEXT} $A", pair=f"{END_OF_TEXT} $A {END_OF_TEXT} $B", special_tokens=[(END_OF_TEXT, eot)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, clean_up_tokenization_spaces=False)


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, out_dir: str | Path, *,
                    provenance: dict | None = None,
                    on_text: Callable[[int], None] | None = None) -> PreTrainedTokenizerFast:
    """Train, save to ``out_dir`` (HF fast tokenizer + ``ptp_tokenizer.json``) and return the tokenizer."""
    tokenizer = build_bpe(texts, cfg, on_text)
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    info = {"config": asdict(cfg), "vocab_size": len(tokenizer), "special_tokens": [END_OF_TEXT],
            "provenance": provenance or {}}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return tokenizer
