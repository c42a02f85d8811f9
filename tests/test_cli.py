"""The command line: --help and argument errors import no torch; input checks; clear errors for bad models."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from ptp.cli import defaults, main
from ptp.testing import tiny_checkpoint

HEAVY = ("torch", "transformers", "pyarrow", "numpy")
# Runs ptp.cli.main(ARGS) (or, with --all-help, formats every subcommand's help), then reports on stderr's
# last line which heavy modules got imported.
PROBE = f"""
import json, sys
from ptp.cli import build_parser, main
code = 0
try:
    if sys.argv[1:] == ["--all-help"]:
        parser, _ = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command")
        for p in sub.choices.values():
            p.format_help()
    else:
        code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
"""


def _probe(*argv: str) -> tuple[dict, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout + done.stderr


@pytest.mark.parametrize(("argv", "code"), [
    (["--help"], 0), (["bench", "--help"], 0), (["--all-help"], 0),
    (["generate", "--bogus"], 2), (["generate", "--model", "m", "--prompt", "hi", "--seed", "-1"], 2),
])
def test_help_and_argument_errors_import_no_torch(argv, code):
    """`ptp --help` took ~9 s when parsing imported torch; it must stay well under a second."""
    report, text = _probe(*argv)
    assert report == {"code": code, "heavy": []}, text
    if argv == ["--help"]:
        assert "generate" in text and "train-head" in text


def test_import_ptp_is_lazy_and_attributes_still_resolve():
    code = ("import sys, ptp\n"
            "assert 'torch' not in sys.modules, 'import ptp imported torch'\n"
            "assert ptp.bundled.MODEL_DIR.name and 'torch' not in sys.modules\n"
            "from ptp import SamplingConfig, generate\n"
            "assert ptp.PTPModel.__module__ == 'ptp.model' and ptp.SamplingConfig is SamplingConfig\n"
            "assert callable(ptp.model.load_teacher) and callable(ptp.sampling.process) and generate is ptp.generate\n"
            "assert ptp.decoding.METHODS and ptp.training.TrainConfig and set(ptp.__all__) <= set(dir(ptp))\n"
            "try:\n    ptp.no_such_name\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr


def _field_defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _same(copied, library) -> None:
    """Equal and of the same type (1 and 1.0 are equal but --help shows them differently)."""
    assert (type(copied), copied) == (type(library), library)


def test_help_defaults_equal_the_library():
    """The literals ptp.cli.defaults copies (to keep torch out of --help) match their source."""
    from ptp.bench.llama_cpp import LLAMA_CPP_METHODS
    from ptp.bench.runner import ALL_METHODS
    from ptp.bench.tune import DEFAULT_CANDIDATES
    from ptp.data.corpus import DEFAULT_PACKAGES, CorpusConfig
    from ptp.data.documents import FORMATS
    from ptp.data.pregenerate import PregenConfig
    from ptp.data.prompts import PromptConfig
    from ptp.data.shards import DEFAULT_ROWS_PER_SHARD
    from ptp.data.tokenizer import TokenizerConfig
    from ptp.decoding import METHODS
    from ptp.head import HeadConfig
    from ptp.sampling import BENCH_SAMPLING
    from ptp.serve.config import ServeConfig
    from ptp.serve.protocol import SEED_LIMIT
    from ptp.training.head import HeadTrainConfig

    for copied, library in [(defaults.BENCH_METHODS, ALL_METHODS), (defaults.LLAMA_CPP_METHODS, LLAMA_CPP_METHODS),
                            (defaults.TUNE_CANDIDATES, DEFAULT_CANDIDATES),
                            (defaults.DECODE_METHODS, METHODS), (defaults.SEED_LIMIT, SEED_LIMIT),
                            (defaults.CORPUS_PACKAGES, DEFAULT_PACKAGES), (defaults.DOCUMENT_FORMATS, FORMATS),
                            (defaults.ROWS_PER_SHARD, DEFAULT_ROWS_PER_SHARD)]:
        _same(copied, library)
    for name, value in vars(defaults.BENCH_SAMPLING).items():
        _same(value, getattr(BENCH_SAMPLING, name))
    for copied, cls in [(defaults.CORPUS, CorpusConfig), (defaults.PROMPTS, PromptConfig),
                        (defaults.TOKENIZER, TokenizerConfig), (defaults.PREGEN, PregenConfig),
                        (defaults.HEAD, HeadConfig), (defaults.HEAD_TRAIN, HeadTrainConfig),
                        (defaults.SERVE, ServeConfig)]:
        library = _field_defaults(cls)
        for name, value in vars(copied).items():
            _same(value, library[name])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model"
    tiny_checkpoint(path)
    return path


@pytest.mark.parametrize(("flags", "message"), [
    (["--seed", "-1"], "argument --seed: must be in [0, 9223372036854775807], got -1"),
    (["--seed", str(2**63)], "argument --seed: must be in [0, 9223372036854775807]"),
    (["--prompt", ""], "argument --prompt: is empty"),
    (["--prompt", " \n\t"], "argument --prompt: is only whitespace"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
    (["--max-new-tokens", "x"], "argument --max-new-tokens: expected a whole number, got 'x'"),
])
def test_generate_refuses_what_the_server_refuses(model_dir, capsys, flags, message):
    with pytest.raises(SystemExit) as exit:
        main(["generate", "--model", str(model_dir), "--prompt", "def f(", *flags])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_generate_runs_at_the_bounds(model_dir, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", "def f(", "--raw", "--seed", "0",
                 "--max-new-tokens", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tokens"]) == 1


@pytest.mark.parametrize("command", [["generate", "--prompt", "hi"], ["bench"], ["tune"], ["serve"]])
def test_missing_model_directory_is_a_one_line_error(tmp_path, capsys, command):
    missing = tmp_path / "nope"
    assert main([command[0], "--model", str(missing), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err == f"ptp {command[0]}: error: {missing} is not a ptp checkpoint: ptp_config.json is missing\n"


def test_tune_write_refuses_the_shipped_drafter(capsys):
    from ptp.bundled import MODEL_DIR

    before = (MODEL_DIR / "ptp_config.json").read_bytes()
    assert main(["tune", "--write", "--num-prompts", "1"]) == 2  # refused before anything is measured
    err = capsys.readouterr().err
    assert err == (f"ptp tune: error: --write needs --model DIR: it does not edit the shipped drafter in {MODEL_DIR}; "
                   "copy that directory and pass the copy as --model\n")
    assert (MODEL_DIR / "ptp_config.json").read_bytes() == before


@pytest.mark.parametrize(("command", "module", "extra"), [
    (["serve"], "fastapi", "serve"), (["serve"], "uvicorn", "serve"), (["bench"], "matplotlib", "bench")])
def test_a_missing_extra_is_a_one_line_error_naming_it(tmp_path, monkeypatch, capsys, command, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail as if it were not installed
    assert main([*command, "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"ptp {command[0]}: error: ptp {command[0]} needs {module}, which is not installed: "
                   f"pip install 'parallel-token-prediction[{extra}]'\n")


def test_library_entry_points_name_the_missing_extra(tmp_path, monkeypatch):
    import ptp.serve
    from ptp.bench.report import plot
    from ptp.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtra, match=r"ptp.serve.build_app needs fastapi.*\[serve\]'$"):
        ptp.serve.build_app  # noqa: B018 (the attribute access is the import)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtra, match=r"^plotting needs matplotlib, .*'parallel-token-prediction\[bench\]'$"):
        plot({"results": []}, tmp_path)


def test_everything_but_the_extras_imports_without_them():
    blocked = ("fastapi", "starlette", "uvicorn", "matplotlib")
    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            "from ptp.cli import build_parser; build_parser()\n"
            "import ptp, ptp.serve, ptp.bench.report, ptp.bench.runner, ptp.training\n"
            "from ptp.serve import ServeConfig; ptp.PTPModel\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr


def test_corrupt_teacher_weights_are_a_clear_error(tmp_path, capsys):
    path = tmp_path / "model"
    tiny_checkpoint(path)
    weights = path / "teacher" / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    assert main(["generate", "--model", str(path), "--prompt", "def f("]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ptp generate: error: cannot load {weights}: it is corrupt or truncated (")
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_default_threads_leave_cores_for_neighbours():
    from ptp.cli import default_threads

    assert default_threads({}, cpus=2) == 1  # 2 threads on 2 cores collapse beside a busy process
    assert default_threads({}, cpus=1) == 1
    assert default_threads({}, cpus=8) == 4
    assert default_threads({}, cpus=64) == 4
    assert default_threads({"OMP_NUM_THREADS": "3"}, cpus=2) == 3  # the user's setting wins
    assert default_threads({"OMP_NUM_THREADS": "junk"}, cpus=6) == 3


def test_threads_below_one_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--threads", "0", "teacher", "--help"])
    assert exit.value.code == 2
    assert "--threads" in capsys.readouterr().err
