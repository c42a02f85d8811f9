"""Benchmark prompts: Spec-Bench questions or a JSONL of {id, prompt}, selected and tokenised.

Spec-Bench (github.com/hemingkx/Spec-Bench, ``data/spec_bench/question.jsonl``) holds one question per
line, ``{"question_id": int, "category": str, "turns": [str, ...]}``; each turn is a user message and
goes through the tokenizer's chat template. A question's id is ``<category>/<question_id>``. A file
of ``{id, prompt}`` (the held-out code prompts) is raw text, tokenised as it is, in category ``all``.
A file is read as Spec-Bench when its first line has ``turns`` and ``question_id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptp.data.documents import iter_json_records
from ptp.data.prompts import read_prompts

PLAIN_CATEGORY = "all"  # the category of every prompt of a {id, prompt} file
SPEC_BENCH = "spec-bench"
PLAIN = "id-prompt"


@dataclass(frozen=True)
class Question:
    """One benchmark item before tokenisation."""

    id: str
    category: str
    turns: tuple[str, ...]  # user turns (Spec-Bench) or the one raw prompt text
    chat: bool  # True: the turns go through the chat template; False: raw text


@dataclass(frozen=True)
class BenchPrompt:
    """One tokenised benchmark prompt: the first turn's ids, and the user turns to build later ones."""

    id: str
    ids: list[int]
    category: str = PLAIN_CATEGORY
    turns: tuple[str, ...] = ()  # every user turn as text (chat prompts); turn 2 is built from these


class ChatTemplate:
    """A tokenizer's chat template: a conversation to prompt ids, an answer's tokens back to text."""

    def __init__(self, tokenizer) -> None:
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ValueError(f"the tokenizer ({name}) has no chat template, and Spec-Bench questions are chat "
                             "turns: benchmark a chat model (its tokenizer_config.json or chat_template.jinja "
                             "sets one), or give --prompts a JSONL of {id, prompt} (raw text)")
        self.tokenizer = tokenizer
        self.sha256 = hashlib.sha256(str(template).encode()).hexdigest()

    def encode(self, user_turns: Sequence[str], answers: Sequence[str] = ()) -> list[int]:
        """Ids of [user 1, assistant 1, user 2, ...] ending with the generation prompt; ``answers``
        holds one assistant message per user turn but the last."""
        if len(answers) != len(user_turns) - 1:
            raise ValueError(f"{len(user_turns)} user turns need {len(user_turns) - 1} answers, got {len(answers)}")
        messages = []
        for i, turn in enumerate(user_turns):
            messages.append({"role": "user", "content": turn})
            if i < len(answers):
                messages.append({"role": "assistant", "content": answers[i]})
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        # transformers 5 returns a BatchEncoding (a dict) where 4.x returned the list of ids.
        ids = out["input_ids"] if hasattr(out, "keys") else out
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        return [int(i) for i in ids]

    def decode(self, tokens: Sequence[int]) -> str:
        """An answer as the text of the next assistant message (special tokens such as EOS dropped)."""
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)


def is_spec_bench(path: str | Path) -> bool:
    """True when the file's first non-blank line is a Spec-Bench question (has turns and question_id)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return False  # the reader of the other format reports it with a line number
                return isinstance(record, dict) and "turns" in record and "question_id" in record
    return False


def read_spec_bench(path: str | Path) -> list[Question]:
    """Questions of a Spec-Bench file, in file order."""
    questions, seen = [], set()
    for line_no, record in iter_json_records(path, "category"):
        qid, turns = record.get("question_id"), record.get("turns")
        if isinstance(qid, bool) or not isinstance(qid, int | str) or str(qid) == "":
            raise ValueError(f"{path}:{line_no}: no question_id (an integer)")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise ValueError(f"{path}:{line_no}: 'turns' must be a non-empty list of strings")
        question = Question(f"{record['category']}/{qid}", record["category"], tuple(turns), chat=True)
        if question.id in seen:
            raise ValueError(f"{path}:{line_no}: question {question.id} appears twice")
        seen.add(question.id)
        questions.append(question)
    if not questions:
        raise ValueError(f"{path} holds no questions")
    return questions


def read_questions(path: str | Path) -> tuple[str, list[Question]]:
    """(format, questions) of a Spec-Bench file or a JSONL of {id, prompt}."""
    if is_spec_bench(path):
        return SPEC_BENCH, read_spec_bench(path)
    return PLAIN, [Question(p.id, PLAIN_CATEGORY, (p.prompt,), chat=False) for p in read_prompts(path)]


def select_questions(questions: Iterable[Question], categories: Sequence[str] | None = None,
                     per_category: int | None = None, limit: int | None = None) -> list[Question]:
    """Keep ``categories`` (all when None), then the first ``per_category`` of each category, then the
    first ``limit`` of what is left; file order throughout."""
    questions = list(questions)
    for name, value in (("per_category", per_category), ("limit", limit)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if categories is not None:
        present = list(dict.fromkeys(q.category for q in questions))
        unknown = [c for c in categories if c not in present]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; the file has {present}")
        wanted = set(categories)
        questions = [q for q in questions if q.category in wanted]
    if per_category is not None:
        taken: dict[str, int] = {}
        kept = []
        for q in questions:
            if taken.get(q.category, 0) < per_category:
                taken[q.category] = taken.get(q.category, 0) + 1
                kept.append(q)
        questions = kept
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        raise ValueError("no prompts selected")
    return questions


def tokenise(questions: Iterable[Question], tokenizer, chat: ChatTemplate | None = None) -> tuple[BenchPrompt, ...]:
    """First-turn ids of each question: raw text through the tokenizer, chat turns through the template
    (``chat`` is built from ``tokenizer`` when needed; without a template that raises ValueError)."""
    out = []
    for q in questions:
        if q.chat:
            chat = chat or ChatTemplate(tokenizer)
            out.append(BenchPrompt(q.id, chat.encode(q.turns[:1]), q.category, q.turns))
        else:
            out.append(BenchPrompt(q.id, list(tokenizer(q.turns[0]).input_ids), q.category))
    return tuple(out)


def first_prompt_ids(path: str | Path, tokenizer, limit: int) -> tuple[tuple[str, list[int]], ...]:
    """(id, token ids) of the first ``limit`` prompts of a Spec-Bench file or a JSONL of {id, prompt}."""
    _, questions = read_questions(path)
    return tuple((p.id, p.ids) for p in tokenise(select_questions(questions, limit=limit), tokenizer))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
