"""Corpus building, document loaders, tokenizer training and document tokenisation, on tiny fake trees."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from transformers import AutoTokenizer

from ptp.data import corpus
from ptp.data.corpus import CorpusConfig, build_corpus, iter_corpus_files, split_of
from ptp.data.documents import DocumentSource, detect_format, iter_documents, tokenize_documents
from ptp.data.shards import TokenShards
from ptp.data.tokenizer import TokenizerConfig, train_tokenizer

FUNC = 'def f{i}(x):\n    """Add {i}."""\n    return x + {i}\n'


def _write(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())


@pytest.fixture
def fake_trees(tmp_path, monkeypatch):
    """A fake stdlib and an importable fake package ``fakepkg`` with some files to skip."""
    std = tmp_path / "stdlib"
    _write(std, {f"mod{i}.py": FUNC.format(i=i) for i in range(30)})
    _write(std, {"site-packages/other.py": "x = 1\n", "__pycache__/mod0.py": "x = 2\n", "notes.txt": "no"})
    lib = tmp_path / "lib"
    _write(lib / "fakepkg", {"__init__.py": "", "a.py": "A = 1\r\nB = 2\r\n", "copy.py": FUNC.format(i=0),
                              "big.py": "x = 1\n" * 200, "bin.py": b"x = 1\0", "latin.py": b"s = '\xe9'\n",
                              "sub/deep.py": FUNC.format(i=99)})
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.setattr(corpus, "stdlib_tree", lambda: corpus.SourceTree("stdlib", "3.x", None, std))
    return tmp_path


def test_split_is_deterministic_and_proportional():
    paths = [f"pkg/m{i}.py" for i in range(4000)]
    splits = [split_of(p, (0.9, 0.05, 0.05)) for p in paths]
    assert splits == [split_of(p, (0.9, 0.05, 0.05)) for p in paths]
    assert 0.87 < splits.count("train") / 4000 < 0.93 and splits.count("test") > 100
    assert {split_of(p, (1.0, 0.0, 0.0)) for p in paths} == {"train"}


def test_build_corpus(fake_trees):
    cfg = CorpusConfig(packages=("fakepkg", "surely_not_installed_pkg"), split_fractions=(0.6, 0.2, 0.2),
                       max_file_bytes=1000)
    out = fake_trees / "corpus"
    manifest = build_corpus(cfg, out)
    assert manifest["missing_packages"] == ["surely_not_installed_pkg"]
    assert [s["name"] for s in manifest["sources"]] == ["stdlib", "fakepkg"]
    skipped = {r: v["paths"] for r, v in manifest["skipped"].items()}
    assert skipped["duplicate"] == ["fakepkg/copy.py"] and skipped["too_large"] == ["fakepkg/big.py"]
    assert skipped["binary"] == ["fakepkg/bin.py"] and skipped["not_utf8"] == ["fakepkg/latin.py"]
    assert skipped["empty"] == ["fakepkg/__init__.py"]
    files = {s: dict(iter_corpus_files(out, s)) for s in corpus.SPLITS}
    all_paths = [p for s in corpus.SPLITS for p in files[s]]
    assert sorted(all_paths) == sorted([f"stdlib/mod{i}.py" for i in range(30)] + ["fakepkg/a.py",
                                                                                  "fakepkg/sub/deep.py"])
    for s in corpus.SPLITS:
        assert list(files[s]) == manifest["splits"][s]["paths"]
        assert all(split_of(p, cfg.split_fractions) == s for p in files[s])
        assert manifest["splits"][s]["bytes"] == sum(len(t.encode()) for t in files[s].values())
    assert all(files[s] for s in corpus.SPLITS)
    merged = {p: t for s in corpus.SPLITS for p, t in files[s].items()}
    assert merged["fakepkg/a.py"] == "A = 1\nB = 2\n"
    with pytest.raises(ValueError, match="already"):
        build_corpus(cfg, out)
    build_corpus(cfg, out, overwrite=True)
    assert (out / "train.jsonl").read_text() == "".join(
        json.dumps({"path": p, "text": t}) + "\n" for p, t in files["train"].items())
    with pytest.raises(ValueError, match="not installed"):
        build_corpus(CorpusConfig(packages=("surely_not_installed_pkg",), require_packages=True), out, True)


def test_heldout_near_copies_move_to_train(tmp_path, monkeypatch):
    fractions = (0.5, 0.25, 0.25)
    names = [f"m{i}.py" for i in range(40)]
    orig = next(n for n in names if split_of(f"fakepkg/{n}", fractions) == "train")
    near = next(n for n in names if split_of(f"fakepkg/{n}", fractions) == "test")
    body = "".join(f"x{i} = compute({i}, y)\n" for i in range(20))
    _write(tmp_path / "lib" / "fakepkg", {orig: body, near: "# a header\n" + body})
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    cfg = CorpusConfig(packages=("fakepkg",), include_stdlib=False, split_fractions=fractions)
    manifest = build_corpus(cfg, tmp_path / "c")
    assert manifest["moved_to_train"] == [f"fakepkg/{near}"]
    assert manifest["splits"]["train"]["paths"] == sorted([f"fakepkg/{orig}", f"fakepkg/{near}"])
    off = build_corpus(CorpusConfig(packages=("fakepkg",), include_stdlib=False, split_fractions=fractions,
                                    max_heldout_overlap=1.0), tmp_path / "c2")
    assert off["moved_to_train"] == [] and off["splits"]["test"]["paths"] == [f"fakepkg/{near}"]


def test_document_loaders(tmp_path):
    _write(tmp_path / "txt", {"b.txt": "second", "a.txt": "first", "sub/c.txt": "third", "d.md": "skip"})
    assert list(iter_documents(DocumentSource(str(tmp_path / "txt")))) == ["first", "second", "third"]
    assert list(iter_documents(DocumentSource(str(tmp_path / "txt" / "d.md")))) == ["skip"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"body": "x"}\n\n{"body": "y"}\n')
    assert detect_format(jsonl) == "jsonl"
    assert list(iter_documents(DocumentSource(str(jsonl), field="body"))) == ["x", "y"]
    with pytest.raises(ValueError, match="no string field"):
        list(iter_documents(DocumentSource(str(jsonl))))
    with pytest.raises(ValueError, match="format"):
        DocumentSource(str(jsonl), format="csv")
    with pytest.raises(ValueError, match="does not exist"):
        list(iter_documents(DocumentSource(str(tmp_path / "nope"))))


def test_hf_disk_layout(tmp_path):
    """The layout ``DatasetDict.save_to_disk`` writes: dataset_dict.json, <split>/state.json, Arrow streams."""
    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    (root / "dataset_dict.json").write_text('{"splits": ["train"]}')
    names = []
    for k, texts in enumerate((["a", "b"], ["c"])):
        name = f"data-0000{k}-of-00002.arrow"
        names.append({"filename": name})
        table = pa.table({"text": texts, "n": list(range(len(texts)))})
        with pa.OSFile(str(root / "train" / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
    (root / "train" / "state.json").write_text(json.dumps({"_data_files": names}))
    assert detect_format(root) == "hf-disk"
    assert list(iter_documents(DocumentSource(str(root)))) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no split"):
        list(iter_documents(DocumentSource(str(root), split="test")))


def test_tokenizer_and_document_shards(fake_trees):
    out = fake_trees / "corpus"
    build_corpus(CorpusConfig(packages=("fakepkg",), split_fractions=(0.6, 0.2, 0.2)), out)
    assert detect_format(out) == "corpus"
    texts = list(iter_documents(DocumentSource(str(out), split="train")))
    tok_dir = fake_trees / "tok"
    train_tokenizer(texts, TokenizerConfig(vocab_size=300), tok_dir, provenance={"corpus": str(out)})
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>"
    sample = 'def g(y):\n    """Ünïcode."""\n\treturn y\n'
    ids = tok(sample)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == sample
    seen = []
    manifest = tokenize_documents([*texts, ""], tok, fake_trees / "shards", tokenizer_name=str(tok_dir),
                                  rows_per_shard=4, shuffle_seed=None, on_batch=lambda d, t: seen.append((d, t)))
    shards = TokenShards(fake_trees / "shards")
    rows = list(shards.iter_sequences())
    assert manifest["kind"] == "documents" and len(rows) == len(texts)
    assert seen == [(len(texts) + 1, shards.num_tokens)]
    for (tokens, prompt_len), text in zip(rows, texts, strict=True):
        assert prompt_len == 0 and tokens[0] == tok.bos_token_id and tokens[-1] == tok.eos_token_id
        assert tok.decode(tokens, skip_special_tokens=True) == text


def test_document_shards_are_shuffled_deterministically(tmp_path):
    """Ordered sources (the corpus is sorted by package) must not reach training in that order."""
    from ptp.data.tokenizer import build_bpe

    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]
    tok = build_bpe(texts, TokenizerConfig(vocab_size=300, min_frequency=1))
    orders = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        tokenize_documents(texts, tok, tmp_path / name, rows_per_shard=8, shuffle_seed=seed)
        rows = TokenShards(tmp_path / name).iter_sequences()
        orders.append([tok.decode(t, skip_special_tokens=True) for t, _ in rows])
    assert orders[0] == orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(texts) and orders[0] != texts
