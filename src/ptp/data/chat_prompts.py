"""Chat instructions for drafter training, built offline from text already on the machine.

The drafter must never see the benchmark (Spec-Bench), so its training prompts come from elsewhere:
paragraphs and sentences of the Python standard library's docstrings (read from the source files
with ``ast``, nothing is imported) fill instruction templates for the kinds of tasks a chat model is
asked (summarise, translate, answer from a passage, explain, write code), and a small hand-written
list of topics and generated arithmetic problems cover writing, role-play, reasoning and maths.
The result is deterministic for a seed.

``chat_pairs`` builds (instruction, response) pairs from the same documentation for teacher-forced
feature rows (``ptp features --teacher-forced``): a documented function's or class's docstring answers
"what does it do", a function's source answers "write a function to ...", a docstring paragraph
answers "explain this sentence".
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

TOPICS = (
    "the water cycle", "volcanoes", "the history of the printing press", "honey bees", "black holes",
    "the Roman Empire", "photosynthesis", "the French Revolution", "climate change", "machine learning",
    "the human heart", "jazz music", "the Silk Road", "renewable energy", "the immune system",
    "ancient Egypt", "plate tectonics", "the internet", "democracy", "the moon landing", "coffee",
    "the Renaissance", "electric cars", "sleep", "friendship", "the ocean", "rainforests", "chess",
    "the industrial revolution", "vaccines", "Shakespeare", "the stock market", "recycling", "gravity",
    "the Olympic Games", "bread baking", "the solar system", "social media", "languages", "music",
    "mountains", "a small village", "time management", "public libraries", "bicycles", "dinosaurs",
    "the printing of money", "earthquakes", "the scientific method", "healthy eating", "trains",
)
ROLES = (
    "a pirate captain", "a medieval knight", "a detective", "a friendly robot", "a chef", "a tour guide",
    "a teacher", "an astronaut", "a librarian", "a doctor", "a poet", "a travel agent", "a coach",
)
LANGUAGES = ("French", "German", "Spanish", "Italian")
ITEMS = ("apples", "books", "pencils", "marbles", "cookies", "stamps", "tickets", "coins")
NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas")


def stdlib_docstrings(root: Path | None = None, limit_files: int | None = None) -> Iterator[str]:
    """Docstrings (module, class, function) of the standard library's Python files, by path order."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "test" not in p.parts and "site-packages" not in p.parts)
    for path in files[:limit_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def _paragraphs(docs: list[str]) -> list[str]:
    out = []
    for doc in docs:
        for para in re.split(r"\n\s*\n", doc):
            text = " ".join(para.split())
            # Prose only: long enough, mostly letters, no doctest or parameter lists.
            if 200 <= len(text) <= 900 and ">>>" not in text and text.count(":") < 4 and text[0].isupper():
                out.append(text)
    return out


def _sentences(paragraphs: list[str]) -> list[str]:
    out = []
    for para in paragraphs:
        for sent in re.split(r"(?<=[.!?])\s+", para):
            if 40 <= len(sent) <= 200 and sent[0].isupper() and sent.endswith("."):
                out.append(sent)
    return out


def _function_tasks(docs: list[str]) -> list[str]:
    return [task for task in map(_task, docs) if task]


def _math_problem(rng: random.Random) -> str:
    a, b, c = rng.randint(3, 60), rng.randint(2, 25), rng.randint(2, 9)
    name, other, item = rng.choice(NAMES), rng.choice(NAMES), rng.choice(ITEMS)
    forms = (
        f"{name} has {a} {item}. {other} gives {name} {b} more, and then {name} shares them equally among "
        f"{c} friends. How many {item} does each friend get, and how many are left over?",
        f"A shop sells {item} for ${b} each. {name} buys {a} of them and pays with ${a * b + c * 10}. "
        "How much change does " + name + " get?",
        f"{name} reads {b} pages a day. The book has {a * c + b} pages. How many days does it take to "
        "finish the book?",
        f"A train travels {a * c} km in {c} hours. At the same speed, how far does it travel in {b} hours?",
    )
    return rng.choice(forms)


def chat_instructions(num: int, seed: int = 0, root: Path | None = None) -> list[str]:
    """``num`` user instructions mixing summarise / translate / passage QA / explain / code / write / maths."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num!r}")
    rng = random.Random(seed)
    docs = list(stdlib_docstrings(root))
    paragraphs, tasks = _paragraphs(docs), _function_tasks(docs)
    sentences = _sentences(paragraphs)
    if not paragraphs or not sentences or not tasks:
        raise ValueError(f"too little documentation text found under {root or 'the standard library'}")
    makers = (
        lambda: f"Summarize: {rng.choice(paragraphs)}",
        lambda: f"Summarize the following text in one or two sentences.\n\n{rng.choice(paragraphs)}",
        lambda: f"Translate English to {rng.choice(LANGUAGES)}: {rng.choice(sentences)}",
        lambda: f"{rng.choice(paragraphs)}\n\nWhat is the main point of this passage?",
        lambda: f"Explain in simple words: {rng.choice(sentences)}",
        lambda: f"Write a Python function to {rng.choice(tasks)}.",
        lambda: f"Write a short essay about {rng.choice(TOPICS)}.",
        lambda: f"Write a short story that involves {rng.choice(TOPICS)}.",
        lambda: f"Pretend you are {rng.choice(ROLES)}. Describe your typical day.",
        lambda: f"What are three interesting facts about {rng.choice(TOPICS)}?",
        lambda: f"Explain {rng.choice(TOPICS)} to a ten-year-old.",
        lambda: f"What are the advantages and disadvantages of {rng.choice(TOPICS)}?",
        lambda: _math_problem(rng),
        lambda: f"Solve step by step: {_math_problem(rng)}",
    )
    return [rng.choice(makers)() for _ in range(num)]


@dataclass(frozen=True)
class Documented:
    """A documented module, class or function of a Python source file."""

    name: str  # dotted: module[.Class][.function]
    doc: str
    source: str  # the definition's source ("" for a module)


def documented_code(roots: Sequence[Path]) -> Iterator[Documented]:
    """Every documented module, class and function under ``roots`` by path (tests, caches and installed
    packages inside a root skipped: the standard library's folder holds ``site-packages``)."""
    for root in roots:
        files = sorted(p for p in Path(root).rglob("*.py") if not _SKIPPED & set(p.parts[len(Path(root).parts):]))
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
                tree = ast.parse(text)
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError, RecursionError):
                continue
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            yield from _documented(tree, module, text.splitlines(keepends=True))


def _documented(node: ast.AST, prefix: str, lines: list[str]) -> Iterator[Documented]:
    doc = ast.get_docstring(node) if isinstance(node, _DOCUMENTED) else None
    if doc:
        source = "" if isinstance(node, ast.Module) else "".join(lines[node.lineno - 1 : node.end_lineno])
        yield Documented(prefix, doc, textwrap.dedent(source).rstrip())
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _documented(child, f"{prefix}.{child.name}", lines)


_SKIPPED = {"test", "tests", "__pycache__", "site-packages", "dist-packages"}
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def chat_pairs(num: int, seed: int = 0, roots: Sequence[Path] | None = None,
               max_chars: int = 1600) -> list[tuple[str, str]]:
    """``num`` (instruction, response) pairs from documented code under ``roots`` (default: the standard library)."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num!r}")
    rng = random.Random(seed)
    items = list(documented_code(roots or [Path(sysconfig.get_paths()["stdlib"])]))
    explained = [d for d in items if 150 <= len(d.doc) <= max_chars and ">>>" not in d.doc]
    coded = [d for d in items if d.source and len(d.source) <= max_chars and _task(d.doc)]
    paragraphs = _paragraphs([d.doc for d in items])
    if not explained or not coded or not paragraphs:
        raise ValueError(f"too little documented code found under {roots or 'the standard library'}")

    def explain() -> tuple[str, str]:
        d = rng.choice(explained)
        module, _, name = d.name.rpartition(".")
        where = f" in the Python module `{module}`" if module else ""
        return f"What does `{name}`{where} do?", d.doc

    def code() -> tuple[str, str]:
        d = rng.choice(coded)
        return f"Write a Python function to {_task(d.doc)}.", f"```python\n{d.source}\n```"

    def sentence() -> tuple[str, str]:
        para = rng.choice(paragraphs)
        first = re.split(r"(?<=[.!?])\s+", para)[0]
        return f"Explain in simple words: {first}", para

    makers = (explain, explain, code, sentence)
    return [rng.choice(makers)() for _ in range(num)]


def _task(doc: str) -> str | None:
    first = " ".join(doc.split("\n\n")[0].split())
    if 30 <= len(first) <= 160 and first.startswith(("Return", "Convert", "Compute", "Create", "Parse")):
        return first[0].lower() + first[1:].rstrip(".")
    return None

