import json

import pytest
import torch

import ptp
from ptp.cli import main
from ptp.data.tokenizer import TokenizerConfig, build_bpe
from ptp.testing import randomize_adapters, tiny_teacher

TEXT = ["def add(a, b):\n    return a + b\n", "class Point:\n    x: int = 0\n", "for i in range(10):\n    print(i)\n"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    tokenizer = build_bpe(TEXT * 20, TokenizerConfig(vocab_size=300, min_frequency=1))
    vocab = len(tokenizer)
    for name, mode in (("model", "o-ptp"), ("mtp", "mtp")):
        teacher = tiny_teacher("llama")
        teacher.resize_token_embeddings(vocab)
        teacher.config.eos_token_id = tokenizer.eos_token_id
        torch.manual_seed(0)
        teacher.get_output_embeddings().weight.data.normal_(0, 0.5)
        teacher.get_input_embeddings().weight.data.normal_(0, 0.5)
        model = ptp.PTPModel.from_teacher(teacher, mode=mode, lora_rank=4, window=8)
        randomize_adapters(model, 1)
        model.save_pretrained(root / name, include_teacher=True)
        tokenizer.save_pretrained(root / name)
    draft = tiny_teacher("llama", seed=3)
    draft.resize_token_embeddings(vocab)
    draft.save_pretrained(root / "draft")
    with open(root / "prompts.jsonl", "w") as fh:
        for i, text in enumerate(TEXT):
            fh.write(json.dumps({"id": f"p{i}", "prompt": text[:12], "reference": text[12:]}) + "\n")
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
    bad.write_text('{"prompt": "x"}\n')
    assert main(["bench", "--model", str(bench_dir / "model"), "--prompts", str(bad)]) == 2
    assert "expected a JSON object with 'id'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--sampling", "hot"])
