"""`ptp train` end to end: checkpoints load, SIGKILL + --resume continues the same run, 2 processes agree."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import ptp
from ptp.checkpoint_format import fingerprint
from ptp.cli import main as cli_main
from ptp.data.shards import ShardWriter
from ptp.sampling import SamplingConfig, pick, process
from ptp.testing import launch_processes, tiny_teacher

SAMPLING = SamplingConfig(temperature=1.0)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def make_teacher_samples(root: Path, n: int = 40, prompt_len: int = 4, new: int = 20) -> tuple[Path, Path]:
    """A tiny saved teacher and shards of its own samples (kind teacher-samples, with its fingerprint)."""
    teacher = tiny_teacher("llama", 0, sharpness=4.0)
    teacher.save_pretrained(root / "teacher")
    gen = torch.Generator().manual_seed(0)
    fields = {"kind": "teacher-samples", "sampling": SAMPLING, "teacher_fingerprint": fingerprint(teacher)}
    with torch.no_grad(), ShardWriter(root / "samples", fields, rows_per_shard=16) as writer:
        prompts = torch.randint(0, 48, (n, prompt_len), generator=gen)
        seqs = prompts.clone()
        for _ in range(new):  # batched AR sampling with pick/process, like pregeneration
            logits = teacher(seqs).logits[:, -1]
            nxt = pick(torch.rand(n, generator=gen), process(logits, SAMPLING))
            seqs = torch.cat([seqs, nxt[:, None]], 1)
        for row in seqs.tolist():
            writer.add(row, prompt_len)
    return root / "teacher", root / "samples"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    teacher, samples = make_teacher_samples(root)
    config = {
        "model": {"teacher": str(teacher), "lora_rank": 4, "window": 4},
        "data": {"train": str(samples), "val_holdout": 8, "val_rows": 4},
        "packing": {"seq_len": 48, "rows": 4},
        "distill": {"objective": "o-ptp", "windows_per_row": 8},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"max_steps": 6, "eval_every": 3, "save_every": 2, "log_every": 1, "tensorboard": False},
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return root, path


def ptp_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "ptp.cli", "--threads", "1", *map(str, args)]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def basic_run(setup) -> Path:
    """A 3-step single-process run of the module's config (the reference of the multi-process tests)."""
    root, cfg = setup
    out = root / "basic"
    threads = torch.get_num_threads()
    code = cli_main(["--threads", "1", "train", "--config", str(cfg), f"train.out_dir={out}",
                     "--set", "train.max_steps=3"])
    torch.set_num_threads(threads)
    assert code == 0
    return out


def same_curves(one: Path, two: Path) -> None:
    """Per step the same loss and the same pre-clipping gradient norm (so the same gradient scale), and
    the same tokens trained on in all (processes that each ran the whole batch would count double)."""
    state = [json.loads((run / "last" / "trainer" / "state.json").read_text())["run"] for run in (one, two)]
    assert state[0]["tokens"] == state[1]["tokens"] > 0
    a, b = read_csv(one / "metrics.csv"), read_csv(two / "metrics.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert float(y["loss"]) == pytest.approx(float(x["loss"]), rel=1e-4)
        assert float(y["grad_norm"]) == pytest.approx(float(x["grad_norm"]), rel=1e-4)


def test_train_writes_loadable_checkpoints_with_histogram(basic_run):
    out = basic_run
    model = ptp.PTPModel.from_pretrained(out / "best")
    assert model.cfg.mode == "o-ptp" and model.cfg.window == 4 and model.cfg.sampling == SAMPLING
    assert len(model.cfg.correct_hist) == 5 and sum(model.cfg.correct_hist) == pytest.approx(1.0)
    assert [int(r["step"]) for r in read_csv(out / "metrics.csv")] == [1, 2, 3]
    names = {p.name for p in out.iterdir()}
    assert {"last", "best", "metrics.csv", "eval.csv"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    assert not any(p.suffix in {".bin", ".pt", ".pkl"} for p in out.rglob("*"))  # no pickle anywhere


def test_init_from_starts_at_a_saved_drafter(setup):
    from ptp.training import DataConfig, DistillConfig, DrafterConfig, PackingConfig, build_distill_task

    root, cfg = setup
    first = root / "first"
    threads = torch.get_num_threads()
    assert cli_main(["--threads", "1", "train", "--config", str(cfg), f"train.out_dir={first}",
                     "train.max_steps=2"]) == 0
    torch.set_num_threads(threads)
    saved = ptp.PTPModel.from_pretrained(first / "best").trainable_state_dict()
    data = DataConfig(train=str(root / "samples"), val_holdout=8, val_rows=4)
    drafter = DrafterConfig(teacher=str(root / "teacher"), lora_rank=4, window=4)
    args = (data, PackingConfig(seq_len=48, rows=4), DistillConfig(windows_per_row=8), None)
    fresh = build_distill_task(drafter, *args).model.trainable_state_dict()
    warm = build_distill_task(DrafterConfig(**{**drafter.__dict__, "init_from": str(first / "best")}),
                              *args).model.trainable_state_dict()
    assert all(torch.equal(warm[k], saved[k]) for k in saved)
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)


def test_sampling_that_differs_from_the_data_is_refused(setup, capsys):
    root, cfg = setup
    code = cli_main(["train", "--config", str(cfg), f"train.out_dir={root / 'bad'}", "sampling.temperature=0.7"])
    assert code == 2 and "differs from the config the data was sampled under" in capsys.readouterr().err


def test_training_picks_its_cdf_order_whatever_the_data_was_sampled_in():
    """Samples are valid under any CDF order: only temperature / top-k / top-p must match the data."""
    from ptp.training.setup import resolve_sampling

    manifest = {"kind": "teacher-samples", "sampling": {"temperature": 0.7, "top_k": 50, "top_p": 0.95}}  # no order
    assert resolve_sampling(manifest, None) == SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)
    wanted = SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order="sorted")
    assert resolve_sampling(manifest, wanted) == wanted
    with pytest.raises(ValueError, match="differs"):
        resolve_sampling(manifest, SamplingConfig(temperature=0.7, top_k=40, top_p=0.95, order="sorted"))


def test_overrides_fill_a_null_section(tmp_path, capsys):
    """`sampling: null` in the YAML (use the data's) still takes `sampling.KEY=VALUE` overrides."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  teacher: t\ndata:\n  train: d\nsampling: null\ntrain:\n  max_steps: 3\n")
    assert cli_main(["train", "--config", str(cfg), "--print-config", "sampling.order=sorted",
                     "sampling.temperature=0.7", "train.attention=sdpa"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["sampling"]["order"] == "sorted" and printed["sampling"]["temperature"] == 0.7
    assert printed["train"]["max_steps"] == 3 and printed["train"]["attention"] == "sdpa"


@pytest.mark.slow  # SIGKILL + --resume: three training runs
def test_resume_after_sigkill_continues_the_same_run(setup):
    root, cfg = setup
    steps = 30
    common = ["--config", cfg, f"train.max_steps={steps}", "train.save_every=3", "train.eval_every=10"]
    ref = subprocess.Popen(ptp_cmd("train", *common, f"train.out_dir={root / 'ref'}"), env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = root / "killed"
    victim = subprocess.Popen(ptp_cmd("train", *common, f"train.out_dir={run}"), env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "last").is_symlink() or os.readlink(run / "last") < "checkpoint-000006":
        assert victim.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = int(os.readlink(run / "last").split("-")[1])
    assert killed_at < steps
    assert ptp.PTPModel.from_pretrained(run / "last") is not None  # the last checkpoint loads
    resumed = subprocess.run(ptp_cmd("train", *common, f"train.out_dir={run}", "--resume"), env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    assert ref.wait(timeout=300) == 0
    got, want = read_csv(run / "metrics.csv"), read_csv(root / "ref" / "metrics.csv")
    assert [int(r["step"]) for r in got] == list(range(1, steps + 1))  # no step lost or repeated
    for a, b in zip(got, want, strict=True):  # the same batches, u's and optimizer state: the same curve
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5, abs=1e-6)
    assert os.readlink(run / "last") == f"checkpoint-{steps:06d}"
    ptp.PTPModel.from_pretrained(run / "best")


@pytest.mark.slow  # two DDP processes
def test_two_processes_agree_with_one(setup, basic_run):
    """Rows are split over processes and the loss is normalised globally: same losses, gradient norms
    and validation."""
    root, cfg = setup
    single = basic_run
    summary = launch_processes(2, "train", "--config", str(cfg), "train.max_steps=3", f"train.out_dir={root / 'two'}")
    assert summary["processes"] == 2 and summary["sharded"] is False  # DDP: a whole model per process
    one, two = read_csv(single / "metrics.csv"), read_csv(root / "two" / "metrics.csv")
    assert len(one) == len(two) == 3
    assert float(two[0]["loss"]) == pytest.approx(float(one[0]["loss"]), rel=1e-5)  # the first step
    same_curves(single, root / "two")
    e1, e2 = read_csv(single / "eval.csv"), read_csv(root / "two" / "eval.csv")
    assert float(e2[0]["val_loss"]) == pytest.approx(float(e1[0]["val_loss"]), rel=1e-4)
    assert float(e2[0]["mean_correct"]) == pytest.approx(float(e1[0]["mean_correct"]), abs=1e-9)


@pytest.mark.slow  # two FSDP processes, twice
def test_fsdp_over_two_processes_agrees_with_one_and_resumes(setup):
    """train.sharding=fsdp (FSDP2 over gloo) with gradient accumulation: the same loss curve as one
    process, across a resume (optimizer state gathered, then sharded again), and the same weights."""
    root, cfg = setup
    settings = ["--config", str(cfg), "train.grad_accum=2", "packing.rows=2"]
    single = root / "accum"
    threads = torch.get_num_threads()
    assert cli_main(["--threads", "1", "train", *settings, "train.max_steps=3", f"train.out_dir={single}"]) == 0
    torch.set_num_threads(threads)
    run = root / "fsdp"
    for steps, extra in ((2, []), (3, ["--resume"])):
        summary = launch_processes(2, "train", *settings, f"train.max_steps={steps}", "train.sharding=fsdp",
                                   f"train.out_dir={run}", *extra)
        assert summary["processes"] == 2 and summary["sharded"] is True
    assert [int(r["step"]) for r in read_csv(run / "metrics.csv")] == [1, 2, 3]
    same_curves(single, run)
    e1, e2 = read_csv(single / "eval.csv"), read_csv(run / "eval.csv")
    assert float(e2[-1]["val_loss"]) == pytest.approx(float(e1[-1]["val_loss"]), rel=1e-4)
    want = ptp.PTPModel.from_pretrained(single / "last").trainable_state_dict()
    got = ptp.PTPModel.from_pretrained(run / "last").trainable_state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=1e-5)
