"""Prompt extraction: signature + docstring → body, exact source slices, deterministic selection."""

from __future__ import annotations

import json

from ptp.data import corpus
from ptp.data.prompts import PromptConfig, build_prompts, extract_prompts, read_prompts, select_prompts

SOURCE = '''import os


@decorator(1)
def top(a, b=2):
    """Add things.

    Longer text.
    """
    # a comment
    return a + b


class Thing:
    """Class docstrings are not prompts."""

    async def method(self, x):
        """Do it."""
        if x:
            return x
        return None

    def no_doc(self):
        return 1

    def only_doc(self):
        """Nothing else."""

    def outer(self):
        """Has an inner function."""
        def inner():
            """Inner doc."""
            return 2
        return inner
'''


def test_extract_prompts_exact_slices():
    prompts = {p.id: p for p in extract_prompts("pkg/m.py", SOURCE)}
    assert sorted(prompts) == ["pkg/m.py:17:Thing.method", "pkg/m.py:29:Thing.outer",
                               "pkg/m.py:31:Thing.outer.<locals>.inner", "pkg/m.py:5:top"]
    top = prompts["pkg/m.py:5:top"]
    assert top.prompt == '@decorator(1)\ndef top(a, b=2):\n    """Add things.\n\n    Longer text.\n    """\n'
    assert top.reference == "    # a comment\n    return a + b\n"
    method = prompts["pkg/m.py:17:Thing.method"]
    assert method.prompt == '    async def method(self, x):\n        """Do it."""\n'
    for p in prompts.values():
        assert (p.prompt + p.reference) in SOURCE + "\n"
    assert list(extract_prompts("bad.py", "def broken(:\n")) == []


def test_select_and_write(tmp_path):
    files = [(f"pkg/m{i}.py", SOURCE) for i in range(5)]
    cfg = PromptConfig(max_prompts=3, min_body_chars=10, min_body_lines=1)
    chosen = select_prompts(files, cfg)
    assert len(chosen) == 3 and [p.id for p in chosen] == sorted(p.id for p in chosen)
    assert len({p.prompt for p in chosen}) == 3  # repeated prompts across files are dropped
    assert select_prompts(reversed(files), cfg) != [] and chosen == select_prompts(files, cfg)
    assert all(len(p.reference.strip()) >= 10 for p in chosen)
    # a corpus directory with a test split and an empty train split
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "test.jsonl").write_text("".join(json.dumps({"path": p, "text": t}) + "\n" for p, t in files))
    (tmp_path / "c" / "train.jsonl").write_text("")
    splits = {s: {"file": f"{s}.jsonl"} for s in corpus.SPLITS}
    (tmp_path / "c" / "manifest.json").write_text(json.dumps({"format": corpus.FORMAT, "splits": splits}))
    out = tmp_path / "p" / "test.jsonl"
    assert build_prompts(tmp_path / "c", cfg, out) == 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [set(r) for r in records] == [{"id", "prompt", "reference"}] * 3
    assert [p.to_dict() for p in read_prompts(out)] == [p.to_dict() for p in chosen]


def test_decontamination_against_train():
    files = [("pkg/test.py", SOURCE)]
    cfg = PromptConfig(min_body_chars=10)
    assert len(select_prompts(files, cfg)) == 2  # Thing.method and Thing.outer have >= 3 body lines
    leaked = "def other(y):\n        if x:\n            return x\n        return None\n"
    kept = select_prompts(files, cfg, train_files=[("pkg/train.py", leaked)])
    assert [p.id for p in kept] == ["pkg/test.py:29:Thing.outer"]
    assert len(select_prompts(files, PromptConfig(min_body_chars=10, max_train_overlap=1.0),
                              train_files=[("pkg/train.py", leaked)])) == 2
