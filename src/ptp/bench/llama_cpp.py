"""llama.cpp as the CPU peer in ``ptp bench``: the teacher's own GGUF file through llama-cpp-python.

``llama-cpp`` decodes autoregressively (one token per forward call, MAT 1.00); ``llama-cpp-pld`` adds
llama-cpp-python's prompt-lookup drafter (``LlamaPromptLookupDecoding``), whose candidates one forward
call verifies. Every forward call (``Llama.eval``) is counted, so MAT and the tokens-per-call histogram
are measured, not taken on trust.

What is held equal to ptp's methods: the prompt token ids (ptp's tokenizer and chat template; llama.cpp's
tokenizer is never used), the token limit, the EOS ids (the EOS token is emitted and ends the answer, as
in ptp), the thread count (torch's), a fresh KV cache per run (no reuse of a previous prompt's prefix)
and the sampling distribution: temperature, then top-k, then top-p (ptp's and Hugging Face's order;
llama-cpp-python's default chain applies top-p before the temperature and adds min-p 0.05), or greedy.
What differs is the arithmetic: llama.cpp computes with the GGUF's quantised weights (Q4_1 for the
default teacher), ptp with float32 weights dequantised from the same file, so outputs are not expected
to equal ``ar``'s token for token; the benchmark reports how often they do (greedy).

llama-cpp-python is an optional extra (``pip install 'parallel-token-prediction[llama-cpp]'``); PyPI has
only its source, and building it takes minutes. This module imports it only when a method is built.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ptp.bench.methods import PLD_TOKENS, Run
from ptp.sampling import SamplingConfig

if TYPE_CHECKING:
    from ptp.bench.prompts import BenchPrompt, ChatTemplate

LLAMA_CPP_METHODS = ("llama-cpp", "llama-cpp-pld")
EXTRA = "llama-cpp"  # the optional dependency group that installs llama-cpp-python
PLD_NGRAM = 2  # LlamaPromptLookupDecoding's default n-gram size
CONTEXT_ROUND = 256  # llama.cpp's context is sized to the prompts, rounded up to a multiple of this
TURN_MARGIN = 32  # tokens of slack per earlier turn: a decoded answer may re-tokenise a little longer


def require_llama_cpp(what: str):
    """The ``llama_cpp`` module, or MissingExtra naming ``pip install '...[llama-cpp]'``."""
    from ptp.extras import require

    require(EXTRA, "llama_cpp", what=what)
    import llama_cpp

    return llama_cpp


def teacher_gguf(model_dir: str | Path, verify: bool = True) -> Path:
    """The GGUF file of the teacher a checkpoint records: a packaged teacher's (hash-verified unless
    ``verify`` is False) or a ``.gguf`` path; ValueError for a teacher that is no GGUF file."""
    from ptp.checkpoint_format import recorded_teacher
    from ptp.teachers import TEACHERS, check_gguf_file, packaged_file, verify_packaged

    source = recorded_teacher(model_dir)
    if isinstance(source, str) and source in TEACHERS:
        return verify_packaged(source) if verify else packaged_file(TEACHERS[source])
    if source is not None and str(source).lower().endswith(".gguf"):
        return check_gguf_file(source)
    raise ValueError(f"the llama-cpp methods run the teacher's GGUF file, but {model_dir} records the teacher "
                     f"{str(source)!r}, which is not one (a packaged teacher's name or a .gguf path)")


def gguf_summary(path: str | Path) -> dict:
    """{"file", "type" (e.g. "Q4_1"), "context_length"} of a GGUF file, read with the ``gguf`` package."""
    return dict(_gguf_summary(str(Path(path).resolve())))


@functools.lru_cache(maxsize=8)
def _gguf_summary(path: str) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    file_type = reader.fields.get("general.file_type")
    try:
        kind = gguf.LlamaFileType(int(file_type.contents())).name.removeprefix("MOSTLY_") if file_type else None
    except ValueError:
        kind = None
    arch = reader.fields.get("general.architecture")
    context = reader.fields.get(f"{arch.contents()}.context_length") if arch else None
    return {"file": Path(path).name, "type": kind or "unknown-type",
            "context_length": int(context.contents()) if context else None}


def environment(model_dir: str | Path) -> dict:
    """For the benchmark record: llama-cpp-python's version and the GGUF file (name, type, sha256)."""
    import llama_cpp

    from ptp.checkpoint_format import recorded_teacher
    from ptp.teachers import TEACHERS, sha256_file

    path, source = teacher_gguf(model_dir, verify=False), recorded_teacher(model_dir)
    sha256 = TEACHERS[source].sha256 if isinstance(source, str) and source in TEACHERS else sha256_file(path)
    summary = gguf_summary(path)
    return {"llama_cpp_python": llama_cpp.__version__,
            "gguf": {"file": summary["file"], "type": summary["type"], "sha256": sha256}}


def context_size(prompts: Sequence[BenchPrompt], max_new_tokens: int, turns: int = 1,
                 chat: ChatTemplate | None = None, limit: int | None = None) -> int:
    """A llama.cpp context that holds every conversation the benchmark runs: the longest prompt (turn t:
    the earlier turns with empty answers, plus room for the answers) and its answer, rounded up, at most
    ``limit`` (the model's trained context). Sized, not the model's full context: prompt lookup keeps
    logits for every position of the context (n_ctx x vocabulary floats)."""
    longest = 0
    for prompt in prompts:
        longest = max(longest, len(prompt.ids))
        for turn in range(2, min(turns, len(prompt.turns)) + 1):
            empty = chat.encode(prompt.turns[:turn], [""] * (turn - 1)) if chat is not None else prompt.ids
            longest = max(longest, len(empty) + (turn - 1) * (max_new_tokens + TURN_MARGIN))
    needed = -(-(longest + max_new_tokens) // CONTEXT_ROUND) * CONTEXT_ROUND
    return min(needed, limit) if limit else needed


class LlamaCppMethod:
    """One llama.cpp model (``Llama``) decoding plainly or with prompt lookup; same interface as
    ``PTPMethod``: ``run(prompt_ids, max_new_tokens, sampling, seed) -> Run``."""

    def __init__(self, gguf_path: str | Path, eos_ids: Sequence[int], n_ctx: int, threads: int,
                 pld: bool = False) -> None:
        name = "llama-cpp-pld" if pld else "llama-cpp"
        llama_cpp = require_llama_cpp(f"method {name}")
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        self.eos_ids = frozenset(eos_ids)
        self.n_ctx = n_ctx
        self.weights = f"{gguf_summary(gguf_path)['type']} GGUF"
        draft = LlamaPromptLookupDecoding(max_ngram_size=PLD_NGRAM, num_pred_tokens=PLD_TOKENS) if pld else None
        # logits_all=pld: with a draft model, 0.3.36 keeps every position's logits but sizes that buffer by
        # the logits_all argument (n_batch rows otherwise): prompts over n_batch tokens would overflow it.
        self.llm = llama_cpp.Llama(str(gguf_path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_threads=threads,
                                   n_threads_batch=threads, draft_model=draft, logits_all=pld, verbose=False)
        self._sampling = SamplingConfig(temperature=0)
        self._seed = 0
        self._per_call: list[int] = []
        # llama-cpp-python 0.3.36 (pinned): generate() builds its sampler chain with _init_sampler and
        # runs every forward through eval(); both are replaced on this instance only.
        self.llm._init_sampler = self._make_sampler
        forward = self.llm.eval

        def counted_eval(tokens) -> None:
            self._per_call.append(0)
            forward(tokens)

        self.llm.eval = counted_eval

    def _make_sampler(self, **_llama_defaults):
        """ptp's distribution: greedy, or temperature -> top-k -> top-p, then a seeded draw."""
        from llama_cpp._internals import LlamaSampler

        s, sampler = self._sampling, LlamaSampler()
        if s.greedy:
            sampler.add_greedy()
            return sampler
        if s.top_k:
            sampler.add_top_k(s.top_k)  # the k largest logits: the same set before or after the temperature
        sampler.add_temp(s.temperature)
        if s.top_p < 1:
            sampler.add_top_p(s.top_p, 1)
        sampler.add_dist(self._seed)
        return sampler

    def run(self, prompt: list[int], max_new_tokens: int, sampling: SamplingConfig, seed: int) -> Run:
        room = self.n_ctx - len(prompt)
        if room < 1:
            raise ValueError(f"a prompt of {len(prompt)} tokens does not fit llama.cpp's context of {self.n_ctx}")
        limit = min(max_new_tokens, room)  # like ptp, stop at the end of the context
        self._sampling, self._seed, self._per_call = sampling, seed & 0xFFFFFFFF, []
        self.llm.reset()  # a fresh KV cache: no reuse of the previous run's prompt prefix
        tokens: list[int] = []
        first = None
        start = time.perf_counter()
        stream = self.llm.generate(prompt, reset=True)
        try:
            for token in stream:
                if first is None:
                    first = time.perf_counter() - start
                tokens.append(int(token))
                self._per_call[-1] += 1
                if token in self.eos_ids or len(tokens) >= limit:
                    break
        finally:
            stream.close()
        seconds = time.perf_counter() - start
        # every call emits at least the token sampled at its last position, so MAT = tokens / calls
        return Run(tokens, len(self._per_call), seconds, seconds if first is None else first, tuple(self._per_call))
