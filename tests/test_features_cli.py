"""ptp features / train-head / tune on a --device: a clear one-line error for a GPU torch cannot see; the
features command end to end on a tiny teacher (a batch never spans two shards); LR decay by time."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ptp.cli import main
from ptp.data.features import FeatureConfig, feature_manifest, read_features
from ptp.testing import tiny_serve_checkpoint
from ptp.training.head import HeadTrainConfig, _lr


@pytest.fixture
def no_cuda(monkeypatch):
    """As on a machine without a GPU, also where one is present."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("argv", [
    ["features", "--out", "{tmp}/f", "--teacher", "{tmp}/missing-teacher"],
    ["train-head", "--features", "{tmp}/missing-features", "--out", "{tmp}/r"],
    ["tune", "--model", "{tmp}/missing-model"],
])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_one_line_error(argv, device, tmp_path, no_cuda, capsys):
    """Checked first: before the teacher, the features or the model are looked for (all missing here)."""
    code = main(["--threads", "1", *(a.format(tmp=tmp_path) for a in argv), "--device", device])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"ptp {argv[0]}: error: --device {device} asked for, but torch sees no "
                                        f"CUDA GPU (torch {torch.__version__}); use --device cpu"]


def test_an_unknown_device_is_a_one_line_error(tmp_path, capsys):
    code = main(["--threads", "1", "features", "--out", str(tmp_path / "f"), "--device", "gpu0"])
    assert code == 2
    expected = "ptp features: error: --device 'gpu0' is not a device (cpu, cuda or cuda:N)"
    assert capsys.readouterr().err.strip() == expected


@pytest.fixture
def teacher_dir(tmp_path):
    """A tiny Llama teacher folder with a chat-template tokenizer (what `ptp features --teacher` takes)."""
    from transformers import AutoTokenizer

    checkpoint = tiny_serve_checkpoint(tmp_path / "ck")
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(checkpoint / "teacher")
    return checkpoint / "teacher"


def test_features_then_train_head_on_cpu(tmp_path, teacher_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"def add{i}(a, b):\n"}) + "\n" for i in range(70)))
    out = tmp_path / "features"
    common = ["--threads", "1", "features", "--teacher", str(teacher_dir), "--prompts", str(prompts),
              "--max-new-tokens", "6", "--seed", "3", "--device", "cpu"]
    assert main([*common, "--out", str(out), "--batch-size", "70"]) == 0
    manifest = feature_manifest(out)
    assert manifest["config"]["rows_per_shard"] == 70 and manifest["num_prompts"] == 70  # one batch, one shard
    assert sorted(p.name for p in out.glob("features-*")) == ["features-00000.safetensors"]
    rows = list(read_features(out))
    assert len(rows) == 70 and all(r.features.device.type == "cpu" and r.left.device.type == "cpu" for r in rows)
    assert main([*common, "--out", str(tmp_path / "small"), "--batch-size", "8", "--num-prompts", "8"]) == 0
    assert feature_manifest(tmp_path / "small")["config"]["rows_per_shard"] == FeatureConfig.rows_per_shard == 64

    run = tmp_path / "run"
    train = ["--threads", "1", "train-head", "--features", str(out), "--teacher", str(teacher_dir), "--out", str(run),
             "--val-rows", "6", "--window", "4", "--draft-vocab", "0", "--steps", "3", "--eval-every", "3",
             "--rows-per-step", "2", "--windows-per-row", "4", "--device", "cpu"]
    assert main([*train, "--decay-by-time"]) == 2  # needs --time-limit
    assert main([*train, "--time-limit", "600", "--decay-by-time"]) == 0
    assert json.loads((run / "config.json").read_text())["lr_decay_seconds"] == 600
    assert (run / "best" / "adapter.safetensors").is_file()


def test_lr_decays_by_steps_or_by_time_whichever_is_further():
    cfg = HeadTrainConfig(steps=1000, lr=1e-3, warmup_steps=10)
    assert _lr(5, cfg, time_progress=0.9) == pytest.approx(6e-4)  # warm-up is by steps only
    assert _lr(10, cfg) == pytest.approx(1e-3)
    assert _lr(10, cfg, time_progress=1.0) == pytest.approx(1e-4)  # the time budget is spent: the floor
    assert _lr(505, cfg, time_progress=0.0) == pytest.approx(_lr(10, cfg, time_progress=0.5))
    assert _lr(505, cfg, time_progress=0.0) == pytest.approx(1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi / 2))))
    assert _lr(1000, cfg, time_progress=0.2) == pytest.approx(1e-4)


def test_features_teacher_forced_from_a_jsonl(tmp_path, teacher_dir, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"add {i}", "response": f"def add{i}(a, b):\n    return a + b"})
                             + "\n" for i in range(5)))
    common = ["--threads", "1", "features", "--teacher", str(teacher_dir), "--prompts", str(pairs),
              "--max-new-tokens", "8", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "f"), "--teacher-forced"]) == 0
    assert feature_manifest(tmp_path / "f")["config"]["teacher_forced"] is True
    rows = list(read_features(tmp_path / "f"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    answer = tokenizer("def add0(a, b):\n    return a + b", add_special_tokens=False)["input_ids"][:7]
    assert rows[0].tokens[rows[0].prompt_len :].tolist() == [*answer, tokenizer.eos_token_id]
    assert main([*common, "--out", str(tmp_path / "g"), "--docs", str(tmp_path)]) == 2
    assert "--docs needs --teacher-forced" in capsys.readouterr().err
    pairs.write_text(json.dumps({"prompt": "no answer"}) + "\n")
    assert main([*common, "--out", str(tmp_path / "h"), "--teacher-forced"]) == 2
    assert "pairs.jsonl:1: --teacher-forced needs a 'response' string" in capsys.readouterr().err
