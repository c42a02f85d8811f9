"""Benchmark prompts from held-out code: function signature plus docstring → body.

For every function or method (``def`` / ``async def``, at any nesting depth) whose body starts with a
docstring and continues after it, the *prompt* is the source from its first decorator (or ``def``)
line through the line that closes the docstring, and the *reference* is the rest of the function.
Source text is kept exactly, indentation included, so ``prompt + reference`` is the function's source.

Selection is deterministic: candidates outside the size limits and repeated prompts are dropped, so
are bodies mostly found verbatim in the train split (functions copied between files; the line-shingle
test of ``corpus.overlap_with``); the rest are ranked by a hash of their id (a fixed pseudo-random
sample across files and packages), the first ``max_prompts`` are kept and written sorted by id.
An id is ``<relative path>:<line>:<qualname>``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ptp.data.corpus import SHINGLE_LINES, iter_corpus_files, overlap_with
from ptp.data.documents import iter_json_records

FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class PromptConfig:
    """Which functions become prompts."""

    max_prompts: int = 1000  # at most this many prompts are written
    min_body_chars: int = 40  # references shorter than this are too trivial to benchmark
    max_body_chars: int = 4000  # ... and longer ones are mostly data
    max_prompt_chars: int = 4000  # signature + docstring longer than this is skipped
    min_body_lines: int = SHINGLE_LINES  # non-blank reference lines; fewer is too trivial to benchmark
    max_train_overlap: float = 0.5  # drop prompts whose body's line shingles occur in train more than this

    def __post_init__(self) -> None:
        if self.max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1, got {self.max_prompts!r}")
        if not 0.0 <= self.max_train_overlap <= 1.0:
            raise ValueError(f"max_train_overlap must be in [0, 1], got {self.max_train_overlap!r}")
        if not 0 <= self.min_body_chars <= self.max_body_chars:
            raise ValueError(f"need 0 <= min_body_chars <= max_body_chars, got "
                             f"{self.min_body_chars!r}, {self.max_body_chars!r}")


@dataclass(frozen=True)
class Prompt:
    id: str  # <relative path>:<line>:<qualname>
    prompt: str  # decorators, signature and docstring, ending with a newline
    reference: str  # the rest of the body, ending with a newline

    def to_dict(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "reference": self.reference}


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualname, node) for every function in tree, in source order."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, FUNCTION_NODES):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _split_function(node, lines: list[str]) -> tuple[str, str] | None:
    """(prompt, reference) of a function with a docstring followed by more code, else None."""
    body = node.body
    first = body[0]
    has_doc = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
               and isinstance(first.value.value, str))
    if not has_doc or len(body) < 2 or body[1].lineno <= first.end_lineno:
        return None
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])  # 1-based
    prompt = "\n".join(lines[start - 1 : first.end_lineno]) + "\n"
    reference = "\n".join(lines[first.end_lineno : node.end_lineno]) + "\n"
    return prompt, reference


def extract_prompts(path: str, text: str) -> Iterator[Prompt]:
    """All candidate prompts of one source file (none if it does not parse)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return  # e.g. Python 2 files and deliberately broken test inputs in the stdlib
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for qualname, node in _functions(tree):
        parts = _split_function(node, lines)
        if parts is not None:
            yield Prompt(f"{path}:{node.lineno}:{qualname}", *parts)


def train_overlap(prompts: list[Prompt], train_files: Iterable[tuple[str, str]]) -> list[float]:
    """Per prompt, the fraction of its reference's line shingles that also occur in the train files."""
    return overlap_with([p.reference for p in prompts], (text for _, text in train_files))


def select_prompts(files: Iterable[tuple[str, str]], cfg: PromptConfig,
                   train_files: Iterable[tuple[str, str]] = ()) -> list[Prompt]:
    """Prompts from (relative path, text) pairs: filtered, de-duplicated, decontaminated against
    ``train_files``, sampled by id hash, sorted by id."""
    by_prompt: dict[str, Prompt] = {}
    for path, text in files:
        for p in extract_prompts(path, text):
            body = p.reference.strip()
            lines = sum(1 for line in body.split("\n") if line.strip())
            if (cfg.min_body_chars <= len(body) <= cfg.max_body_chars and lines >= cfg.min_body_lines
                    and len(p.prompt) <= cfg.max_prompt_chars):
                by_prompt.setdefault(p.prompt, p)  # first occurrence of a repeated prompt wins
    candidates = list(by_prompt.values())
    overlap = train_overlap(candidates, train_files)
    clean = [p for p, o in zip(candidates, overlap, strict=True) if o <= cfg.max_train_overlap]
    ranked = sorted(clean, key=lambda p: hashlib.sha256(p.id.encode()).digest())
    return sorted(ranked[: cfg.max_prompts], key=lambda p: p.id)


def build_prompts(corpus_dir: str | Path, cfg: PromptConfig, out_path: str | Path, split: str = "test") -> int:
    """Write prompts from a corpus split as JSONL ``{"id", "prompt", "reference"}``; returns the count."""
    train = iter_corpus_files(corpus_dir, "train") if cfg.max_train_overlap < 1.0 else ()
    prompts = select_prompts(iter_corpus_files(corpus_dir, split), cfg, train)
    write_prompts(prompts, out_path)
    return len(prompts)


def write_prompts(prompts: Iterable[Prompt], out_path: str | Path) -> None:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for p in prompts:
            handle.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from a JSONL file with at least ``prompt`` per line (``id`` defaults to the line number)."""
    prompts = [Prompt(str(record.get("id", line_no)), record["prompt"], record.get("reference", ""))
               for line_no, record in iter_json_records(path, "prompt")]
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts
