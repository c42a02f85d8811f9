import re

from ptp.cli import main
from ptp.testing import tiny_checkpoint


def test_demo_runs_ptp_and_ar_and_reports_identity(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "model")
    code = main(["demo", "--model", str(tmp_path / "model"), "--max-new-tokens", "24", "--seed", "3",
                 "--temperature", "0.7", "--top-k", "50", "--top-p", "0.95"])
    out = capsys.readouterr().out
    assert code == 0
    assert "outputs identical: yes" in out
    found = re.search(r"pqd: (\d+) tokens in (\d+) teacher calls", out)
    assert found and re.search(r"speedup \d+\.\d+x", out)
    # Captured output is not a terminal: the text is printed whole (no marks inside words) and the
    # tokens of each call are listed after it.
    per_call = [int(n) for n in re.search(r"tokens per teacher call: ([\d ]+)", out).group(1).split()]
    assert len(per_call) == int(found.group(2)) and sum(per_call) == int(found.group(1))


def test_demo_retries_with_a_new_seed(tmp_path, capsys):
    """A prompt the model ends during warm-up is retried with the next seed, not the same one."""
    tiny_checkpoint(tmp_path / "model")
    assert main(["demo", "--model", str(tmp_path / "model"), "--max-new-tokens", "8", "--seed", "5",
                 "--method", "draft-verify"]) == 0
    seed = int(re.search(r"seed (\d+)", capsys.readouterr().out).group(1))
    assert seed >= 5


def test_demo_errors_are_clear(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "model")
    assert main(["demo", "--model", str(tmp_path / "model"), "--prompt-id", "nope"]) == 2
    assert "no prompt with id 'nope'" in capsys.readouterr().err
    assert main(["demo", "--model", str(tmp_path / "missing")]) == 2
    assert "is not a ptp checkpoint" in capsys.readouterr().err
    assert main(["demo", "--model", str(tmp_path / "model"), "--prompt", " "]) == 2
    assert main(["demo", "--model", str(tmp_path / "model"), "--seed", "-1"]) == 2
