"""Pregeneration: the sampler equals AR decoding, rows ignore batching, resume after SIGKILL is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import LlamaForCausalLM

import ptp
from ptp.cli import main as cli_main
from ptp.data.pregenerate import PregenConfig, pregenerate, prompts_from_documents, sample_rows
from ptp.data.shards import ShardWriter, TokenShards
from ptp.data.tokenizer import TokenizerConfig, train_tokenizer
from ptp.sampling import SamplingConfig
from ptp.testing import tiny_config, tiny_teacher

SAMPLING = SamplingConfig(temperature=0.8, top_k=20, top_p=0.95)
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12, 13, 14], [7, 7]]


def test_rows_match_ar_decoding_and_ignore_batching():
    teacher = tiny_teacher("llama")
    cfg = PregenConfig(SAMPLING, max_new_tokens=12, eos_token_id=3)
    seeds = [11, 12, 13, 14, 15]
    batched = sample_rows(teacher, PROMPTS, seeds, cfg)
    model = ptp.PTPModel.from_teacher(teacher, mode="o-ptp", lora_rank=4).eval()
    for prompt, seed, row in zip(PROMPTS, seeds, batched, strict=True):
        assert sample_rows(teacher, [prompt], [seed], cfg)[0] == row
        ar = ptp.generate(model, torch.tensor(prompt), 12, SAMPLING, seed, "ar").tokens.tolist()
        assert row == (ar[: ar.index(3) + 1] if 3 in ar else ar)


def test_pregenerate_resume_in_process_and_refusals(tmp_path):
    teacher = tiny_teacher("llama")
    cfg = PregenConfig(SAMPLING, completions_per_prompt=2, max_new_tokens=6, batch_size=3, prompts_per_shard=2)
    full = pregenerate(teacher, PROMPTS, cfg, tmp_path / "full")
    assert full["complete"] and full["counts"]["sequences"] == 10
    assert [s["rows"] for s in full["shards"]] == [4, 4, 2]
    rows = list(TokenShards(tmp_path / "full").iter_sequences())
    assert [plen for _, plen in rows] == [len(p) for p in PROMPTS for _ in range(2)]
    assert all(tokens[:plen] == PROMPTS[i // 2] and len(tokens) == plen + 6 for i, (tokens, plen) in enumerate(rows))
    # a directory written with other arguments is refused and left untouched
    pregenerate(teacher, PROMPTS[:2], cfg, tmp_path / "part")
    manifest_path = tmp_path / "part" / "manifest.json"
    with pytest.raises(ValueError, match="differs"):
        pregenerate(teacher, PROMPTS, cfg, tmp_path / "part")  # other prompts
    assert json.loads(manifest_path.read_text())["counts"]["sequences"] == 4
    with pytest.raises(ValueError, match="differs"):
        pregenerate(teacher, PROMPTS, PregenConfig(SAMPLING, max_new_tokens=7), tmp_path / "full")
    assert pregenerate(teacher, PROMPTS, cfg, tmp_path / "full") == full  # complete: nothing to do
    with pytest.raises(ValueError, match="empty"):
        pregenerate(teacher, [[1], []], cfg, tmp_path / "bad")
    with pytest.raises(ValueError, match="positions"):
        pregenerate(teacher, [[1] * 251], cfg, tmp_path / "bad")


def test_prompts_from_documents(tmp_path):
    with ShardWriter(tmp_path, {"kind": "documents"}, rows_per_shard=2) as writer:
        for n in (3, 10, 7, 25):
            writer.add(list(range(100 * n, 100 * n + n)))
    shards = TokenShards(tmp_path)
    chunks = prompts_from_documents(shards, prompt_tokens=5, max_prompts=4, seed=1)
    everything = prompts_from_documents(shards, prompt_tokens=5, max_prompts=100)
    assert everything == [[1000 + i for i in range(k, k + 5)] for k in (0, 5)] + [list(range(700, 705))] + [
        [2500 + i for i in range(k, k + 5)] for k in range(0, 25, 5)]
    assert len(chunks) == 4 and all(c in everything for c in chunks)
    assert chunks == prompts_from_documents(shards, prompt_tokens=5, max_prompts=4, seed=1)
    with pytest.raises(ValueError, match="has 30 tokens"):
        prompts_from_documents(shards, prompt_tokens=30, max_prompts=4)


@pytest.fixture
def teacher_and_tokenizer(tmp_path):
    texts = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(60)]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=300), tmp_path / "tok")
    torch.manual_seed(0)
    teacher = LlamaForCausalLM._from_config(tiny_config("llama", vocab=len(tok)), attn_implementation="sdpa")
    teacher.save_pretrained(tmp_path / "teacher")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": t[:12 + i % 9]}) + "\n" for i, t in enumerate(texts)))
    return tmp_path


def _args(root, out):
    return ["pregenerate", "--teacher", str(root / "teacher"), "--tokenizer", str(root / "tok"), "--prompts",
            str(root / "prompts.jsonl"), "--out", str(out), "--completions", "2", "--max-new-tokens", "40",
            "--batch-size", "8", "--prompts-per-shard", "4", "--no-stop-at-eos", "--quiet"]


@pytest.mark.slow  # a subprocess killed mid-run and restarted
def test_sigkill_mid_run_then_restart_equals_uninterrupted(teacher_and_tokenizer):
    root = teacher_and_tokenizer
    killed = root / "killed"
    args = ["--threads", "1", *_args(root, killed)]
    argv = [sys.executable, "-c", "import sys; from ptp.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    manifest = killed / "manifest.json"
    deadline = time.monotonic() + 120
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file():
            rows = json.loads(manifest.read_text())["counts"]["sequences"]
            if rows >= 16:  # 2 of 15 shards (8 rows each) written: mid-run
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 16 <= rows < 120 and not json.loads(manifest.read_text())["complete"]
    assert cli_main(args) == 0  # restart with the same arguments
    assert cli_main(["--threads", "1", *_args(root, root / "straight")]) == 0
    a, b = TokenShards(killed), TokenShards(root / "straight")
    assert a.manifest == b.manifest and a.manifest["complete"] and len(a) == 120
    assert list(a.iter_sequences()) == list(b.iter_sequences())
    assert not list(killed.glob("*.tmp"))
