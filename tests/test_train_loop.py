"""The training loop with a fake task: schedule, early stopping, atomic checkpoints, config overrides, pretraining."""

import argparse
import csv
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ptp.cli.train_config import add_config_arguments, config_sections, read_config
from ptp.data.shards import ShardWriter
from ptp.testing import launch_processes
from ptp.training import Callbacks, OptimConfig, PackingConfig, TrainConfig, lr_at, train
from ptp.training.packing import DataPosition, SequenceSource, pack
from ptp.training.run_dir import (
    flatten_optimizer,
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    unflatten_optimizer,
)
from ptp.training.types import EvalResult, StepOutput


class FakeTask:
    """A linear model fit to a constant; evaluation scores follow a given list."""

    def __init__(self, scores, tmp: Path) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.scores = list(scores)
        self.evals = 0
        with ShardWriter(tmp / "docs", {"kind": "documents"}) as writer:
            for i in range(20):
                writer.add(list(range(i, i + 6)))
        from ptp.data.shards import TokenShards

        self.source = SequenceSource(TokenShards(tmp / "docs"), True, 0)

    def trainable(self):
        return self.model

    def train_batch(self, position):
        return pack(self.source, position, PackingConfig(seq_len=8, rows=2))

    def step(self, model, batch):
        x = batch.tokens[:, :4].float() / 10
        loss = ((model(x) - 1.0) ** 2).sum()
        return StepOutput(loss, torch.tensor(2.0), torch.tensor(0.0), batch.num_tokens)

    def evaluate(self, reduce, rank, world):
        score = self.scores[min(self.evals, len(self.scores) - 1)]
        self.evals += 1
        return EvalResult({"score": score}, score)

    def save_model(self, directory, result, weights):
        save_file({k: v.detach().clone() for k, v in weights.items()}, str(directory / "m.safetensors"))

    def load_model(self, directory):
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(directory / "m.safetensors")))

    def config_dict(self):
        return {"fake": True}


def test_lr_schedule():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_at(s, cfg, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg, 14) == pytest.approx(1.0) and lr_at(14, cfg, 14) == pytest.approx(0.1)
    assert lr_at(9, cfg, 14) == pytest.approx(0.55)
    assert lr_at(100, OptimConfig(lr=2.0, warmup_steps=0), 10) == 2.0
    # A time budget that runs out first drives the cosine: half the time spent = mid-way.
    assert lr_at(5, cfg, 1000, time_fraction=0.5) == pytest.approx(0.55)
    assert lr_at(5, cfg, 1000, time_fraction=1.0) == pytest.approx(0.1)
    assert lr_at(9, cfg, 14, time_fraction=0.1) == pytest.approx(0.55)  # steps ahead of the clock


def test_patience_stops_and_best_is_kept(tmp_path):
    task = FakeTask([1.0, 2.0, 1.5, 1.9, 1.2, 3.0], tmp_path)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=50, eval_every=2, save_every=0, patience=2,
                      tensorboard=False)
    result = train(task, cfg, OptimConfig(lr=1e-2, warmup_steps=0))
    assert result.stop_reason == "patience" and result.steps == 8 and result.best_step == 4
    run = tmp_path / "run"
    checkpoints = sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-000004", "checkpoint-000008"]  # only best and last remain
    assert (run / "best").resolve().name == "checkpoint-000004"
    state, optimizer, _ = load_trainer_state(run / "last")
    assert state["run"]["step"] == 8 and state["run"]["best_score"] == 2.0
    assert DataPosition.from_dict(state["run"]["position"]).rows == 16
    assert len(optimizer["state"]) == 2  # weight and bias moments


def test_time_budget_caps_the_reported_eta(tmp_path):
    class Record(Callbacks):
        def __init__(self):
            self.etas = []

        def on_progress(self, progress):
            self.etas.append(progress.eta_s)

    record = Record()
    minutes = 0.002  # 0.12 s: the clock, not the 10**6 steps, ends this run
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=10**6, eval_every=0, save_every=0, log_every=1,
                      max_minutes=minutes, tensorboard=False)
    result = train(FakeTask([1.0], tmp_path), cfg, OptimConfig(lr=1e-2, warmup_steps=0), callbacks=record)
    assert result.stop_reason == "max_minutes" and result.steps < 10**6
    assert record.etas and max(record.etas) <= minutes * 60


def test_resume_continues_step_count_and_truncates_metrics(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=6, eval_every=3, save_every=0, log_every=1,
                      tensorboard=False)
    train(FakeTask([1.0], tmp_path), cfg, OptimConfig(lr=1e-2, warmup_steps=0))
    run = tmp_path / "run"
    # Pretend the process died after step 6 had logged steps 7-8 but not saved them.
    with open(run / "metrics.csv", "a") as handle:
        handle.write("7,9,0,0,0,0\n8,9,0,0,0,0\n")
    more = TrainConfig(**{**cfg.__dict__, "max_steps": 9, "resume": True})
    result = train(_fresh(tmp_path), more, OptimConfig(lr=1e-2, warmup_steps=0))
    assert result.steps == 9
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 10))


def _fresh(tmp_path):
    sub = tmp_path / "again"
    sub.mkdir(exist_ok=True)
    return FakeTask([1.0], sub)


def test_a_crash_mid_save_leaves_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()

    def write(directory):
        (directory / "weights.txt").write_text("ok")

    save_checkpoint(run, 1, write, {"run": {"step": 1}}, opt.state_dict(), is_best=True)

    def crash(directory):
        (directory / "weights.txt").write_text("partial")
        raise KeyboardInterrupt  # killed while writing

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, 2, crash, {"run": {"step": 2}}, opt.state_dict(), is_best=True)
    assert latest_checkpoint(run).name == "checkpoint-000001"
    assert not (run / "checkpoint-000002").exists() and (run / "checkpoint-000002.tmp").exists()
    save_checkpoint(run, 3, write, {"run": {"step": 3}}, opt.state_dict(), is_best=False)
    assert not (run / "checkpoint-000002.tmp").exists()  # leftovers are pruned
    assert (run / "best").resolve().name == "checkpoint-000001" and latest_checkpoint(run).name == "checkpoint-000003"


def test_optimizer_state_round_trips_without_pickle():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    for _ in range(2):
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict())
    json.dumps(meta)
    restored = unflatten_optimizer(tensors, json.loads(json.dumps(meta)))
    other = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    other.load_state_dict(restored)
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(other.state_dict()["state"][0][key], value)
    assert other.param_groups[0]["betas"] == (0.8, 0.9)


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(argv)


def test_config_overrides_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-4\ntrain:\n  max_steps: 10\n")
    data = read_config(_parse(["--config", str(path), "--set", "optim.lr=3e-4", "train.max_steps=20",
                               "optim.schedule=cosine", "--out", "x", "--resume"]))
    sections = config_sections(data, {"optim": OptimConfig, "train": TrainConfig})
    assert sections["optim"].lr == pytest.approx(3e-4) and isinstance(sections["optim"].lr, float)
    assert sections["optim"].schedule == "cosine"
    assert sections["train"].max_steps == 20 and sections["train"].out_dir == "x" and sections["train"].resume
    with pytest.raises(ValueError, match="unknown keys"):
        config_sections(read_config(_parse(["optim.lrr=1"])), {"optim": OptimConfig})
    with pytest.raises(ValueError, match="unknown config sections"):
        config_sections(read_config(_parse(["optimizer.lr=1"])), {"optim": OptimConfig})
    with pytest.raises(ValueError, match="not a valid"):
        config_sections(read_config(_parse(["train.max_steps=many"])), {"train": TrainConfig})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        read_config(_parse(["nonsense"]))


@pytest.mark.slow  # pretraining over two FSDP processes
def test_pretrain_end_to_end(tmp_path):
    """A tiny 8-layer Llama from scratch: loss falls, the export is a standard directory with the tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    from ptp.cli import main

    words = [f"w{i}" for i in range(30)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "<eos>", *words])}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    tok.save_pretrained(tmp_path / "tok")
    gen = torch.Generator().manual_seed(0)
    with ShardWriter(tmp_path / "docs", {"kind": "documents", "tokenizer": str(tmp_path / "tok")}) as writer:
        for _ in range(60):  # a learnable pattern: counting up modulo 30
            start = int(torch.randint(30, (1,), generator=gen))
            writer.add([2 + (start + j) % 30 for j in range(int(torch.randint(8, 20, (1,), generator=gen)))])
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    settings = [f"data.train={tmp_path / 'docs'}", "data.val_holdout=8", "data.val_rows=4",
                "teacher.hidden_size=32", "teacher.heads=4", "teacher.kv_heads=2", "teacher.intermediate_size=64",
                "packing.seq_len=32", "packing.rows=4", "optim.lr=3e-3", "optim.warmup_steps=2",
                "train.max_steps=16", "train.eval_every=8", "train.tensorboard=false"]
    code = main(["--threads", "1", "pretrain", "--set", *settings, f"train.out_dir={out}"])
    torch.set_num_threads(threads)
    assert code == 0
    with open(out / "eval.csv", newline="") as handle:
        losses = [float(row["val_loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < losses[0] < math.log(32) + 0.5
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 8 and not model.config.tie_word_embeddings
    assert model.config.rope_parameters["rope_theta"] == 10000.0 and not model.config.attention_bias
    assert (out / "model" / "model.safetensors").is_file() and not (out / "model" / "trainer").exists()
    assert AutoTokenizer.from_pretrained(out / "model").eos_token == "<eos>"
    # The same run with the weights sharded over two processes (FSDP2 over gloo): the same curve.
    summary = launch_processes(2, "pretrain", "--set", *settings, "train.sharding=fsdp",
                               f"train.out_dir={tmp_path / 'fsdp'}")
    assert summary["processes"] == 2 and summary["sharded"] is True
    for name, key in (("metrics.csv", "loss"), ("metrics.csv", "grad_norm"), ("eval.csv", "val_loss")):
        with open(out / name, newline="") as one, open(tmp_path / "fsdp" / name, newline="") as two:
            want = [float(row[key]) for row in csv.DictReader(one)]
            assert [float(row[key]) for row in csv.DictReader(two)] == pytest.approx(want, rel=1e-4)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "model")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=1e-3, atol=1e-4)


def test_accelerates_own_fsdp_mode_is_refused_with_the_alternative(tmp_path):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    fake = SimpleNamespace(distributed_type=DistributedType.FSDP)
    with pytest.raises(ValueError, match=r"train\.sharding=fsdp"):
        train(FakeTask([1.0], tmp_path), TrainConfig(out_dir=str(tmp_path / "run")), OptimConfig(), accelerator=fake)
