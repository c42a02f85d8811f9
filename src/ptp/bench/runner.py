"""Run methods side by side: interleaved prompt by prompt in one process, then summarise as ratios,
per prompt category (Spec-Bench's) and overall."""

from __future__ import annotations

import copy
import hashlib
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
import transformers

import ptp
from ptp.bench import llama_cpp
from ptp.bench.methods import HF_METHODS, LOSSLESS, HFMethod, PTPMethod, Run, plain_teacher
from ptp.bench.prompts import BenchPrompt, ChatTemplate
from ptp.checkpoint_format import read_config
from ptp.model import PTPModel
from ptp.sampling import BENCH_SAMPLING, SamplingConfig

ALL_METHODS = (*HF_METHODS, *LOSSLESS, *llama_cpp.LLAMA_CPP_METHODS)  # every method ptp bench runs
TURN_SEED_STRIDE = 1_000_000  # turn t of prompt i samples with u-stream seed + i + (t - 1) * this


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark; defaults: both samplings of the paper's benchmark protocol."""

    model_dir: str  # PTP checkpoint (the teacher is loaded from it)
    prompts: tuple[BenchPrompt, ...]  # tokenised prompts; (id, token ids) pairs are accepted too
    methods: tuple[str, ...] = ("ar-hf", "ar", "draft-verify", "pqd", "pld")
    samplings: tuple[SamplingConfig, ...] = (SamplingConfig(temperature=0), BENCH_SAMPLING)
    max_new_tokens: int = 128
    slot_budget: int | None = None  # pqd / mtp u-slots per call; None: each model's tuned budget
    seed: int = 0  # u-stream seed of prompt i is seed + i
    warmup: int = 1  # prompts run once, untimed, before measuring
    mtp_model_dir: str | None = None  # the independent-prediction control checkpoint (mode mtp)
    draft_model_dir: str | None = None  # small HF causal LM for sps (same tokenizer)
    eos_ids: tuple[int, ...] = ()
    device: str = "cpu"  # where every model runs: cpu, cuda, cuda:1, ...
    turns: int = 1  # user turns run per prompt; turn t > 1 follows the history method's answers (needs chat)
    prompt_source: dict = field(default_factory=dict)  # prompt file, its sha256, selection flags (for the record)
    chat: ChatTemplate | None = field(default=None, compare=False, repr=False)  # builds turn 2+ prompts

    def __post_init__(self) -> None:
        prompts = tuple(p if isinstance(p, BenchPrompt) else BenchPrompt(str(p[0]), list(p[1])) for p in self.prompts)
        object.__setattr__(self, "prompts", prompts)
        if self.turns < 1:
            raise ValueError(f"turns must be >= 1, got {self.turns!r}")
        if self.turns > 1 and self.chat is None:
            raise ValueError("more than one turn needs the tokenizer's chat template (BenchConfig.chat)")
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but torch sees no CUDA GPU")
        unknown = set(self.methods) - set(ALL_METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
        if "mtp" in self.methods and not self.mtp_model_dir:
            raise ValueError("method mtp needs --mtp-model (a checkpoint trained with the mtp loss)")
        if set(llama_cpp.LLAMA_CPP_METHODS) & set(self.methods) and torch.device(self.device).type != "cpu":
            raise ValueError("the llama-cpp methods are the CPU peer (llama-cpp-python built for the CPU): "
                             "benchmark them with --device cpu")
        if "sps" in self.methods and not self.draft_model_dir:
            raise ValueError("method sps needs --draft-model (a small HF causal LM with the same tokenizer)")
        if not self.prompts:
            raise ValueError("no prompts to benchmark")


@dataclass
class MethodSummary:
    method: str
    weights: str = ""  # what the method computes with, e.g. "float32, dequantised from Q4_1 GGUF"
    tokens: int = 0
    seconds: float = 0.0
    teacher_calls: int = 0
    first_token_seconds: list[float] = field(default_factory=list)
    per_call: list[int] = field(default_factory=list)  # tokens emitted by each teacher call
    identical: int = 0
    compared: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def mat(self) -> float:
        return self.tokens / self.teacher_calls if self.teacher_calls else 0.0


def build_methods(cfg: BenchConfig) -> tuple[dict, str]:
    """Instantiate each requested method once; also return the model's CDF order (see ``run_bench``)."""
    gguf = None
    wanted = [m for m in cfg.methods if m in llama_cpp.LLAMA_CPP_METHODS]
    if wanted:  # checked before the slow loads: a missing extra or a teacher with no GGUF file fails at once
        llama_cpp.require_llama_cpp(f"method {wanted[0]}")
        gguf = llama_cpp.teacher_gguf(cfg.model_dir)  # the packaged teacher's file is hash-verified
    model = PTPModel.from_pretrained(cfg.model_dir).to(cfg.device).eval()
    eos = list(cfg.eos_ids)
    weights = teacher_weights(model, cfg.model_dir)
    methods = {}
    teacher = plain_teacher(model) if set(HF_METHODS) & set(cfg.methods) else None
    for name in cfg.methods:
        if name in ("ar", "draft-verify", "pqd"):
            if name == "pqd" and model.is_head:
                raise ValueError(f"{cfg.model_dir} is a feature-head drafter: it decodes with draft-verify, not pqd")
            methods[name] = PTPMethod(model, name, cfg.slot_budget, eos, weights)
        elif name == "mtp":
            control = PTPModel.from_pretrained(cfg.mtp_model_dir).to(cfg.device).eval()
            methods[name] = PTPMethod(control, control.default_method, cfg.slot_budget, eos, weights)
        elif name == "ar-hf":
            methods[name] = HFMethod(teacher, eos, weights=weights)
        elif name == "pld":
            methods[name] = HFMethod(copy.deepcopy(teacher), eos, pld=True, weights=weights)
        elif name == "sps":
            draft = ptp.model.load_teacher(cfg.draft_model_dir).to(cfg.device).eval()
            methods[name] = HFMethod(copy.deepcopy(teacher), eos, assistant=draft, weights=weights)
        elif name in llama_cpp.LLAMA_CPP_METHODS:
            n_ctx = llama_cpp.context_size(cfg.prompts, cfg.max_new_tokens, cfg.turns, cfg.chat,
                                           limit=llama_cpp.gguf_summary(gguf)["context_length"])
            methods[name] = llama_cpp.LlamaCppMethod(gguf, eos, n_ctx, torch.get_num_threads(),
                                                     pld=name == "llama-cpp-pld")
    return methods, model.cfg.sampling.order


def teacher_weights(model: PTPModel, model_dir: str) -> str:
    """What ptp's and HF's methods compute with: the teacher's dtype, and the GGUF type it was dequantised
    from when its source is a GGUF file (e.g. "float32, dequantised from Q4_1 GGUF")."""
    dtype = str(model.teacher.dtype).removeprefix("torch.")
    try:
        gguf = llama_cpp.teacher_gguf(model_dir, verify=False)
    except ValueError:  # a teacher folder or hub id: no GGUF behind it
        return dtype
    return f"{dtype}, dequantised from {llama_cpp.gguf_summary(gguf)['type']} GGUF"


def history_method(methods: Iterable[str]) -> str:
    """Whose answer to turn t becomes the assistant message before turn t + 1: ``ar`` when it runs, else
    the first lossless method (the same text), else the first method."""
    methods = list(methods)
    return next((m for m in ("ar", *LOSSLESS) if m in methods), methods[0])


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Run every method on every prompt (interleaved), per sampling config; return the JSON record.

    ``progress`` gets one line per prompt and sampling config, e.g.
    ``[12/240] greedy translation/14: ar 3.10 s, pqd 2.80 s``. With ``cfg.turns`` = 2 a prompt with a
    second user turn runs it next, every method from the same conversation [user 1, the history
    method's answer, user 2]; both turns count in the prompt's category."""
    say = progress or (lambda _msg: None)
    say("loading models")
    methods, order = build_methods(cfg)
    _check_lengths(cfg, methods)
    record = {"config": _config_record(cfg), "environment": environment(cfg), "results": []}
    history = history_method(methods)
    for sampling in cfg.samplings:
        # Every PTP method samples in the CDF order the benchmarked drafter was trained in, so their
        # outputs can be compared token for token with ``ar`` (HF methods draw their own randomness).
        sampling = replace(sampling, order=order)
        name = _sampling_name(sampling)
        weights = {m: getattr(method, "weights", "") for m, method in methods.items()}
        overall = {m: MethodSummary(m, weights[m]) for m in methods}
        by_category: dict[str, dict[str, MethodSummary]] = {}
        counts: dict[str, int] = {}
        say(f"{name}: warming up")
        for prompt in cfg.prompts[: cfg.warmup]:
            for method in methods.values():
                method.run(prompt.ids, min(cfg.max_new_tokens, 16), sampling, cfg.seed)
        for i, prompt in enumerate(cfg.prompts):
            groups = (overall, by_category.setdefault(prompt.category,
                                                      {m: MethodSummary(m, weights[m]) for m in methods}))
            counts[prompt.category] = counts.get(prompt.category, 0) + 1
            ids, answers, runs = prompt.ids, [], {}
            for turn in range(1, min(cfg.turns, max(len(prompt.turns), 1)) + 1):
                if turn > 1:  # outside the timed runs: the conversation so far through the chat template
                    answers.append(cfg.chat.decode(runs[history].tokens))
                    ids = cfg.chat.encode(prompt.turns[:turn], answers)
                seed = cfg.seed + i + (turn - 1) * TURN_SEED_STRIDE
                label = prompt.id if turn == 1 else f"{prompt.id} turn {turn}"
                try:  # interleaved: every method on this prompt, then the next prompt
                    runs = {m: method.run(ids, cfg.max_new_tokens, sampling, seed) for m, method in methods.items()}
                except ValueError as err:  # e.g. a turn-2 conversation longer than the context: say which
                    raise ValueError(f"prompt {label}: {err}") from err
                for summaries in groups:
                    for m, run in runs.items():
                        _add(summaries[m], run)
                    _compare(summaries, runs, sampling)
                say(f"[{i + 1}/{len(cfg.prompts)}] {name} {label}: "
                    + ", ".join(f"{m} {run.seconds:.2f} s" for m, run in runs.items()))
        result = _summarise(sampling, overall)
        result["categories"] = {category: _rows(s) for category, s in by_category.items()}
        result["prompts_per_category"] = counts
        record["results"].append(result)
    return record


def _check_lengths(cfg: BenchConfig, methods: dict) -> None:
    """Fail before the first timed run, not hours in, when a first turn does not fit the context."""
    contexts = [m.model.max_positions for m in methods.values() if isinstance(m, PTPMethod)]
    if not contexts:
        return
    context = min(contexts)
    long = [f"{p.id} ({len(p.ids)})" for p in cfg.prompts if len(p.ids) > context]
    if long:
        more = f" and {len(long) - 3} more" if len(long) > 3 else ""
        raise ValueError(f"{len(long)} prompts are longer than the model's context of {context} tokens: "
                         + ", ".join(long[:3]) + more + " (leave them out with --categories or --num-prompts)")


def _add(summary: MethodSummary, run: Run) -> None:
    summary.tokens += len(run.tokens)
    summary.seconds += run.seconds
    summary.teacher_calls += run.teacher_calls
    summary.first_token_seconds.append(run.first_token_seconds)
    summary.per_call.extend(run.per_call)


def _compare(summaries: dict[str, MethodSummary], runs: dict[str, Run], sampling: SamplingConfig) -> None:
    """Identical-output check vs ``ar``: the u-stream methods always; HF methods only when greedy."""
    if "ar" not in runs:
        return
    for name, run in runs.items():
        if name == "ar" or (name not in LOSSLESS and not sampling.greedy):
            continue
        summaries[name].compared += 1
        summaries[name].identical += int(run.tokens == runs["ar"].tokens)


def _summarise(sampling: SamplingConfig, summaries: dict[str, MethodSummary]) -> dict:
    return {"sampling": sampling.to_dict(), "name": _sampling_name(sampling), "methods": _rows(summaries)}


def _rows(summaries: dict[str, MethodSummary]) -> list[dict]:
    """One row per method; speedups relative to ``ar`` / ``ar-hf`` over the same prompts."""

    def speed(name: str) -> float | None:
        return summaries[name].tokens_per_second if name in summaries else None

    rows = []
    for name, s in summaries.items():
        ttft = sorted(s.first_token_seconds)
        rows.append({
            "method": name,
            "weights": s.weights,
            "tokens": s.tokens,
            "seconds": round(s.seconds, 4),
            "tokens_per_second": round(s.tokens_per_second, 2),
            "mat": round(s.mat, 3),
            "speedup_vs_ar": _ratio(s.tokens_per_second, speed("ar")),
            "speedup_vs_ar_hf": _ratio(s.tokens_per_second, speed("ar-hf")),
            "ttft_median_seconds": round(ttft[len(ttft) // 2], 4) if ttft else None,
            "identical_rate": round(s.identical / s.compared, 4) if s.compared else None,
            "tokens_per_call_histogram": _histogram(s.per_call),
        })
    return rows


def _histogram(values: list[int]) -> dict[str, int]:
    """{tokens per call: number of calls}."""
    counts: dict[str, int] = {}
    for v in sorted(values):
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def _ratio(a: float, b: float | None) -> float | None:
    return round(a / b, 3) if b else None


def _sampling_name(s: SamplingConfig) -> str:
    return "greedy" if s.greedy else f"T={s.temperature:g} top-k={s.top_k} top-p={s.top_p:g}"


def _config_record(cfg: BenchConfig) -> dict:
    data = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "chat"}
    data["prompts"] = [p.id for p in cfg.prompts]
    data["samplings"] = [s.to_dict() for s in cfg.samplings]
    data["prompt_source"] = dict(cfg.prompt_source)
    data["chat_template_sha256"] = cfg.chat.sha256 if cfg.chat else None
    if cfg.turns > 1:
        data["history_method"] = history_method(cfg.methods)
    return data


def environment(cfg: BenchConfig) -> dict:
    """Device, library versions and model hashes: what a reader needs to trust the numbers."""
    cpu = f"cpu ({platform.processor() or platform.machine()})"
    target = torch.device(cfg.device)
    device = torch.cuda.get_device_name(target) if target.type == "cuda" else cpu
    hashes = {}
    for key in ("model_dir", "mtp_model_dir", "draft_model_dir"):
        path = getattr(cfg, key)
        if path:
            files = sorted(Path(path).rglob("*.safetensors"))
            hashes[key] = {str(f.relative_to(path)): _file_hash(f) for f in files}
    env = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "ptp": ptp.__version__,
        "model_hashes": hashes,
        "teacher_weight_hash": None if not cfg.model_dir else _teacher_hash(cfg.model_dir),
    }
    if set(llama_cpp.LLAMA_CPP_METHODS) & set(cfg.methods):
        env["llama_cpp"] = llama_cpp.environment(cfg.model_dir)
    return env


def _teacher_hash(model_dir: str) -> str | None:
    return read_config(model_dir)["teacher_fingerprint"].get("weight_hash")


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
