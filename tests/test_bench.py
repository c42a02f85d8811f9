import hashlib
import importlib.util
import json
import shutil
import sys

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
    assert main([*args, "--turns", "2"]) == 2
    assert "--turns 2 needs Spec-Bench questions" in capsys.readouterr().err
    assert main([*args, "--categories", "qa"]) == 2
    assert "unknown categories ['qa']; the file has ['all']" in capsys.readouterr().err
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


def test_tune_per_batch_size_writes_batch_budgets(bench_dir, capsys):
    model = bench_dir / "model"
    code = main(["tune", "--model", str(model), "--num-prompts", "1", "--budgets", "4", "--batch-sizes", "1", "3",
                 "--max-new-tokens", "6", "--write"])
    out = capsys.readouterr().out
    assert code == 0 and "batch of 1:" in out and "batch of 3:" in out
    pairs = ptp.PTPModel.from_pretrained(model).cfg.batch_budgets
    assert [b for b, _ in pairs] == [1, 3] and all(k in (0, 4) for _, k in pairs)


def test_forward_cost_reports_a_positive_cost_per_query_size(bench_dir):
    from ptp.bench.tune import forward_cost

    costs = forward_cost(ptp.PTPModel.from_pretrained(bench_dir / "model"), context_len=16, query_sizes=(1, 8),
                         repeats=3)
    assert set(costs) == {1, 8} and all(c > 0 for c in costs.values())


# --- Spec-Bench: reading, selection, chat template, per-category figures ---

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
SPEC_BENCH_QUESTIONS = [  # two categories, interleaved so that "first N of each, in file order" is tested
    {"question_id": 1, "category": "writing", "turns": ["def add(a, b):", "Now return a - b."]},
    {"question_id": 2, "category": "translation", "turns": ["Translate: return a + b"]},
    {"question_id": 3, "category": "writing", "turns": ["class Point:", "Add a method."]},
    {"question_id": 4, "category": "translation", "turns": ["Translate: for i in range(3):"]},
    {"question_id": 5, "category": "writing", "turns": ["import os", "And sys?"]},
    {"question_id": 6, "category": "translation", "turns": ["Translate: x = [1, 2]"]},
]


def write_spec_bench(path):
    path.write_text("".join(json.dumps(q) + "\n" for q in SPEC_BENCH_QUESTIONS))
    return path


@pytest.fixture(scope="module")
def chat_dir(bench_dir):
    """The tiny checkpoint again, its tokenizer given a chat template."""
    from transformers import AutoTokenizer

    from ptp.checkpoint_format import tokenizer_dir

    out = bench_dir / "chat-model"
    if not out.exists():
        shutil.copytree(bench_dir / "model", out)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(out))
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(tokenizer_dir(out))
    return out


def test_spec_bench_is_detected_and_selected_by_category(tmp_path):
    from ptp.bench.prompts import read_questions, select_questions

    fmt, questions = read_questions(write_spec_bench(tmp_path / "q.jsonl"))
    assert fmt == "spec-bench"
    assert [q.id for q in questions][:2] == ["writing/1", "translation/2"]
    assert questions[0].turns == ("def add(a, b):", "Now return a - b.") and questions[0].chat

    def ids(**kw):
        return [q.id for q in select_questions(questions, **kw)]

    assert ids(categories=["translation"]) == ["translation/2", "translation/4", "translation/6"]
    assert ids(per_category=2) == ["writing/1", "translation/2", "writing/3", "translation/4"]
    assert ids(per_category=2, limit=3) == ["writing/1", "translation/2", "writing/3"]
    assert ids(categories=["writing"], per_category=1) == ["writing/1"]
    assert ids(limit=1) == ["writing/1"]
    with pytest.raises(ValueError, match="unknown categories"):
        select_questions(questions, categories=["poetry"])
    with pytest.raises(ValueError, match="per_category must be >= 1"):
        select_questions(questions, per_category=0)

    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"id": "a.py:100:f", "prompt": "def f():\\n"}\n')
    fmt, questions = read_questions(plain)
    assert fmt == "id-prompt" and [(q.id, q.category, q.chat) for q in questions] == [("a.py:100:f", "all", False)]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "category": "qa", "turns": "not a list"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: 'turns' must be"):
        read_questions(bad)
    bad.write_text('{"question_id": 1, "category": "qa", "turns": ["a"]}\n' * 2)
    with pytest.raises(ValueError, match="qa/1 appears twice"):
        read_questions(bad)


def test_chat_template_builds_the_conversation_and_is_required(bench_dir, chat_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from ptp.bench.prompts import ChatTemplate, read_questions, tokenise
    from ptp.checkpoint_format import tokenizer_dir

    spec = write_spec_bench(tmp_path / "q.jsonl")
    _, questions = read_questions(spec)
    plain_tok = AutoTokenizer.from_pretrained(tokenizer_dir(bench_dir / "model"))
    with pytest.raises(ValueError, match="no chat template"):
        ChatTemplate(plain_tok)
    with pytest.raises(ValueError, match="no chat template"):
        tokenise(questions, plain_tok)
    assert main(["bench", "--model", str(bench_dir / "model"), "--prompts", str(spec)]) == 2
    assert "no chat template" in capsys.readouterr().err

    chat = ChatTemplate(AutoTokenizer.from_pretrained(tokenizer_dir(chat_dir)))
    ids = chat.encode(["def f():", "again"], ["return 1"])
    assert all(isinstance(i, int) for i in ids)
    assert chat.tokenizer.decode(ids) == "<user>def f():\n<assistant>return 1\n<user>again\n<assistant>"
    prompts = tokenise(questions, chat.tokenizer)
    assert prompts[0].ids == chat.encode(["def add(a, b):"]) and prompts[0].category == "writing"
    assert prompts[0].turns == questions[0].turns
    with pytest.raises(ValueError, match="need 1 answers"):
        chat.encode(["a", "b"])

    long = tmp_path / "long.jsonl"  # refused before the first timed run, naming the prompt
    long.write_text(json.dumps({"question_id": 7, "category": "rag", "turns": ["word " * 300]}) + "\n")
    assert main(["bench", "--model", str(chat_dir), "--prompts", str(long), "--methods", "ar"]) == 2
    assert "longer than the model's context of 256 tokens: rag/7 (" in capsys.readouterr().err


def test_bench_reports_every_figure_per_category(chat_dir, tmp_path, capsys):
    spec = write_spec_bench(tmp_path / "q.jsonl")
    out = tmp_path / "spec.json"
    base = ["--threads", "1", "bench", "--model", str(chat_dir), "--prompts", str(spec), "--sampling", "greedy"]
    code = main([*base, "--methods", "ar-hf", "ar", "pqd", "--max-new-tokens", "6", "--per-category", "2",
                 "--turns", "2", "--json", str(out)])
    assert code == 0
    err = capsys.readouterr().err  # captured: not a terminal, so plain progress lines
    assert "[1/4] greedy writing/1: ar-hf " in err and "[1/4] greedy writing/1 turn 2: ar-hf " in err
    assert "[4/4] greedy translation/4: " in err and "translation/4 turn 2" not in err
    record = json.loads(out.read_text())
    config = record["config"]
    assert config["prompts"] == ["writing/1", "translation/2", "writing/3", "translation/4"]
    assert config["prompt_source"] == {
        "path": str(spec), "sha256": hashlib.sha256(spec.read_bytes()).hexdigest(), "format": "spec-bench",
        "questions_in_file": 6, "num_prompts": None, "per_category": 2, "categories": None, "turns": 2}
    assert config["turns"] == 2 and config["history_method"] == "ar" and config["chat_template_sha256"]
    (result,) = record["results"]
    assert list(result["categories"]) == ["writing", "translation"]
    assert result["prompts_per_category"] == {"writing": 2, "translation": 2}
    overall = {r["method"]: r for r in result["methods"]}
    per_cat = {c: {r["method"]: r for r in rows} for c, rows in result["categories"].items()}
    for method, row in overall.items():
        assert row["tokens"] == sum(rows[method]["tokens"] for rows in per_cat.values())
        assert row["seconds"] == pytest.approx(sum(rows[method]["seconds"] for rows in per_cat.values()), abs=1e-3)
        calls = sum(sum(rows[method]["tokens_per_call_histogram"].values()) for rows in per_cat.values())
        assert calls == sum(row["tokens_per_call_histogram"].values())
    for rows in per_cat.values():
        assert set(rows) == set(overall) and set(rows["pqd"]) == set(overall["pqd"])
        assert rows["pqd"]["identical_rate"] == 1.0 and rows["ar-hf"]["identical_rate"] == 1.0
        assert rows["ar"]["speedup_vs_ar"] == 1.0 and rows["pqd"]["speedup_vs_ar_hf"] is not None
        assert rows["pqd"]["ttft_median_seconds"] is not None
    table = out.with_suffix(".md").read_text()
    assert "**greedy, per category**" in table and "| pqd MAT | pqd × ar |" in table
    assert "| writing | 2 |" in table and "| **overall** | 4 |" in table

    code = main([*base, "--methods", "ar", "pqd", "--max-new-tokens", "4", "--categories", "translation",
                 "--num-prompts", "2", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["config"]["prompts"] == ["translation/2", "translation/4"]
    assert record["config"]["prompt_source"]["categories"] == ["translation"]
    assert list(record["results"][0]["categories"]) == ["translation"]
    assert "turn 2" not in capsys.readouterr().err


# -- llama.cpp, the CPU peer (optional: llama-cpp-python is built from source) ------------------------------
def test_llama_cpp_without_the_package_is_a_one_line_error(bench_dir, tmp_path, monkeypatch, capsys):
    from ptp.bench.llama_cpp import LlamaCppMethod
    from ptp.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` fails as if it were not installed
    for method in ("llama-cpp", "llama-cpp-pld"):
        assert main(["bench", "--model", str(bench_dir / "model"), "--prompts", str(bench_dir / "prompts.jsonl"),
                     "--methods", "ar", method, "--json", str(tmp_path / "bench.json")]) == 2
        assert capsys.readouterr().err == (f"ptp bench: error: ptp bench --methods {method} needs llama_cpp, which "
                                           "is not installed: pip install 'parallel-token-prediction[llama-cpp]'\n")
    assert not (tmp_path / "bench.json").exists()
    with pytest.raises(MissingExtra, match=r"^method llama-cpp-pld needs llama_cpp, .*\[llama-cpp\]'$"):
        LlamaCppMethod(tmp_path / "x.gguf", [0], 256, 1, pld=True)


def test_llama_cpp_needs_a_gguf_teacher_and_a_sized_context(bench_dir):
    from ptp.bench.llama_cpp import context_size, teacher_gguf
    from ptp.bench.prompts import BenchPrompt
    from ptp.bench.runner import BenchConfig

    with pytest.raises(ValueError, match=r"run the teacher's GGUF file, but .* records the teacher"):
        teacher_gguf(bench_dir / "model")  # its teacher is a saved folder
    prompts = [BenchPrompt("a", list(range(300))), BenchPrompt("b", list(range(10)))]
    assert context_size(prompts, 64) == 512 and context_size(prompts, 64, limit=400) == 400
    with pytest.raises(ValueError, match="with --device cpu"):
        BenchConfig(model_dir="m", prompts=[("a", [1])], methods=("ar", "llama-cpp"), device="meta")


class _FakeLlama:
    """Stands in for llama_cpp.Llama (0.3.36's generate: eval the prompt, then per call yield the sampled token
    and, with a draft model, the accepted drafts): tokens 100, 101, ...; two per call when drafting."""

    def __init__(self, path, *, draft_model=None, **kwargs):
        self.draft, self.kwargs, self.n_tokens = draft_model, kwargs, 0

    def reset(self):
        self.n_tokens = 0

    def eval(self, tokens):
        self.n_tokens += len(tokens)

    def generate(self, tokens, reset=True):
        self.chain = self._init_sampler(top_k=40, min_p=0.05)  # llama-cpp-python's defaults: ignored
        self.eval(list(tokens))
        token = 100
        while True:
            for _ in range(2 if self.draft else 1):
                yield token
                token += 1
            self.eval([token])


class _FakeSampler(list):
    def __getattr__(self, name):  # add_greedy(), add_top_k(50), ...: recorded in order
        return lambda *args: self.append((name.removeprefix("add_"), *args))


def test_llama_cpp_method_counts_calls_and_samples_like_ptp(monkeypatch, tmp_path):
    import types

    from ptp.bench import llama_cpp as bench_llama
    from ptp.sampling import SamplingConfig

    fake = types.ModuleType("llama_cpp")
    fake.Llama = _FakeLlama
    speculative, internals = types.ModuleType("llama_cpp.llama_speculative"), types.ModuleType("llama_cpp._internals")
    speculative.LlamaPromptLookupDecoding = lambda **kwargs: kwargs
    internals.LlamaSampler = _FakeSampler
    for name, module in (("llama_cpp", fake), ("llama_cpp.llama_speculative", speculative),
                         ("llama_cpp._internals", internals)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(bench_llama, "gguf_summary", lambda path: {"type": "Q4_1"})
    greedy, top = SamplingConfig(temperature=0), SamplingConfig(temperature=0.7, top_k=50, top_p=0.95)

    plain = bench_llama.LlamaCppMethod(tmp_path / "t.gguf", [103], n_ctx=64, threads=3)
    assert plain.weights == "Q4_1 GGUF" and plain.llm.kwargs["n_threads"] == plain.llm.kwargs["n_threads_batch"] == 3
    run = plain.run([1, 2, 3], 16, greedy, seed=5)
    assert run.tokens == [100, 101, 102, 103] and run.teacher_calls == 4 and run.per_call == (1, 1, 1, 1)  # EOS kept
    assert plain.llm.chain == [("greedy",)]
    pld = bench_llama.LlamaCppMethod(tmp_path / "t.gguf", [103], n_ctx=64, threads=1, pld=True)
    assert pld.llm.draft == {"max_ngram_size": 2, "num_pred_tokens": 10}
    # 0.3.36 sizes its all-positions logits buffer by this argument, not by having a draft model
    assert pld.llm.kwargs["logits_all"] is True and plain.llm.kwargs["logits_all"] is False
    run = pld.run([1, 2, 3], 3, top, seed=5)
    assert run.tokens == [100, 101, 102] and run.teacher_calls == 2 and run.per_call == (2, 1)  # the limit
    assert pld.llm.chain == [("top_k", 50), ("temp", 0.7), ("top_p", 0.95, 1), ("dist", 5)]  # ptp's order
    assert len(pld.run(list(range(62)), 16, greedy, seed=0).tokens) == 2  # stops at the end of the context
    with pytest.raises(ValueError, match=r"does not fit llama\.cpp.s context of 64"):
        pld.run(list(range(64)), 16, greedy, seed=0)


@pytest.mark.slow  # the real default teacher, in float32 through ptp and as its GGUF through llama.cpp
def test_bench_runs_llama_cpp_beside_ptp(tmp_path):
    pytest.importorskip("llama_cpp")
    from ptp.teachers import DEFAULT_TEACHER, TEACHERS

    teacher = TEACHERS[DEFAULT_TEACHER]
    if importlib.util.find_spec(teacher.module) is None:
        pytest.skip(f"needs the default teacher: {teacher.install_command}")
    prompts = tmp_path / "prompts.jsonl"
    long = "def add(a, b):\n    return a + b\n\n" * 60  # over llama.cpp's batch of 512 tokens
    prompts.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in [("add", "def add(a, b):"),
                                                                                     ("long", long)]))
    out = tmp_path / "bench.json"
    code = main(["--threads", "1", "bench", "--prompts", str(prompts), "--methods", "ar", "llama-cpp", "llama-cpp-pld",
                 "--max-new-tokens", "8", "--sampling", "greedy", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    rows = {r["method"]: r for r in record["results"][0]["methods"]}
    assert set(rows) == {"ar", "llama-cpp", "llama-cpp-pld"}
    assert all(r["tokens_per_second"] > 0 and 0 < r["tokens"] <= 16 for r in rows.values())  # 2 prompts
    assert rows["llama-cpp"]["mat"] == 1.0 and rows["llama-cpp-pld"]["mat"] >= 1.0
    assert rows["llama-cpp"]["identical_rate"] in (0.0, 0.5, 1.0)  # measured per prompt (greedy), not assumed
    assert rows["llama-cpp"]["weights"] == "Q4_1 GGUF"
    assert rows["ar"]["weights"] == "float32, dequantised from Q4_1 GGUF"
    assert record["environment"]["llama_cpp"]["gguf"]["sha256"] == teacher.sha256
    assert "| llama-cpp | Q4_1 GGUF |" in out.with_suffix(".md").read_text()
