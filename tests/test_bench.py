import json

import pytest
import torch

import ptp
from ptp.cli import main
from ptp.testing import tiny_checkpoint, tiny_teacher


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    tiny_checkpoint(root / "model", order="sorted")  # the benchmark samples in the model's CDF order
    tiny_checkpoint(root / "mtp", mode="mtp")
    draft = tiny_teacher("llama", seed=3)
    draft.resize_token_embeddings(ptp.PTPModel.from_pretrained(root / "model").teacher.config.vocab_size)
    draft.save_pretrained(root / "draft")
    (root / "prompts.jsonl").write_text((root / "model" / "prompts.jsonl").read_text())
    return root


def test_bench_writes_json_table_and_plots(bench_dir):
    out = bench_dir / "runs" / "bench.json"
    code = main(["--threads", "1", "bench", "--model", str(bench_dir / "model"), "--prompts",
                 str(bench_dir / "prompts.jsonl"), "--methods", "ar-hf", "ar", "draft-verify", "pqd", "mtp",
                 "pld", "sps", "--mtp-model", str(bench_dir / "mtp"), "--draft-model", str(bench_dir / "draft"),
                 "--max-new-tokens", "12", "--num-prompts", "2", "--sampling", "greedy", "--sampling", "0.7,50,0.95",
                 "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["environment"]["transformers"] and record["environment"]["model_hashes"]["model_dir"]
    assert [r["name"] for r in record["results"]] == ["greedy", "T=0.7 top-k=50 top-p=0.95"]
    assert [r["sampling"]["order"] for r in record["results"]] == ["sorted", "sorted"]
    for result in record["results"]:
        rows = {r["method"]: r for r in result["methods"]}
        assert set(rows) == {"ar-hf", "ar", "draft-verify", "pqd", "mtp", "pld", "sps"}
        for lossless in ("draft-verify", "pqd", "mtp"):
            assert rows[lossless]["identical_rate"] == 1.0
        assert rows["ar"]["mat"] == 1.0 and rows["ar"]["speedup_vs_ar"] == 1.0
        assert all(r["tokens_per_second"] > 0 for r in rows.values())
    greedy = {r["method"]: r for r in record["results"][0]["methods"]}
    assert greedy["ar-hf"]["identical_rate"] == 1.0  # greedy: HF and the u-stream loop agree
    assert out.with_suffix(".md").read_text().count("| pqd |") == 2
    assert (out.parent / "bench-plots" / "speedup.png").stat().st_size > 0
    assert (out.parent / "bench-plots" / "tokens_per_call.png").stat().st_size > 0


def test_bench_rejects_bad_input(bench_dir, capsys):
    args = ["bench", "--model", str(bench_dir / "model"), "--prompts", str(bench_dir / "prompts.jsonl")]
    assert main([*args, "--methods", "mtp"]) == 2
    assert "needs --mtp-model" in capsys.readouterr().err
    bad = bench_dir / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    assert main(["bench", "--model", str(bench_dir / "model"), "--prompts", str(bad)]) == 2
    assert "no string field 'prompt'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--sampling", "hot"])
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err


def test_tune_measures_budgets_and_writes_the_best(bench_dir, capsys):
    model = bench_dir / "model"
    code = main(["tune", "--model", str(model), "--num-prompts", "1", "--budgets", "2", "4",
                 "--max-new-tokens", "8", "--write"])
    out = capsys.readouterr().out
    assert code == 0 and "<- best" in out and "q=64:" in out
    best = json.loads((model / "ptp_config.json").read_text())["ptp"]["slot_budget"]
    assert best in (2, 4)
    assert ptp.PTPModel.from_pretrained(model).cfg.slot_budget == best


def test_forward_cost_reports_a_positive_cost_per_query_size(bench_dir):
    from ptp.bench.tune import forward_cost

    costs = forward_cost(ptp.PTPModel.from_pretrained(bench_dir / "model"), context_len=16, query_sizes=(1, 8),
                         repeats=3)
    assert set(costs) == {1, 8} and all(c > 0 for c in costs.values())
