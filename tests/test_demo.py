import re

from ptp.cli import main
from ptp.cli.demo import CALL_MARK
from ptp.testing import tiny_checkpoint


def test_demo_runs_pqd_and_ar_and_reports_identity(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "model")
    code = main(["demo", "--model", str(tmp_path / "model"), "--max-new-tokens", "24", "--seed", "3",
                 "--temperature", "0.7", "--top-k", "50", "--top-p", "0.95"])
    out = capsys.readouterr().out
    assert code == 0
    assert "outputs identical: yes" in out
    calls = re.search(r"PQD: \d+ tokens in (\d+) calls", out)
    assert calls and re.search(r"speedup \d+\.\d+x", out)
    # Captured output has no colours: each call's tokens end with a mark instead (plus the legend's).
    assert "each call ends at" in out and out.count(CALL_MARK) == int(calls.group(1)) + 1


def test_demo_unknown_prompt_id_is_a_clear_error(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "model")
    assert main(["demo", "--model", str(tmp_path / "model"), "--prompt-id", "nope"]) == 2
    assert "no prompt with id 'nope'" in capsys.readouterr().err
