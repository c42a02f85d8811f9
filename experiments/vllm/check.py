"""vLLM 0.32 on this CPU with the SmolLM2 teacher and the shipped ptp drafter: what holds, measured.

Run with ptp's interpreter after ``bash scripts/setup_vllm.sh``:
    .venv/bin/python experiments/vllm/check.py --out experiments/vllm/results/check.json

Each server run starts vLLM's OpenAI server on 127.0.0.1, sends the first N Spec-Bench dev first turns
(token ids through the chat template, /v1/completions with ``return_token_ids``), one at a time or all
at once, records token ids, tokens/s and vLLM's spec-decode counters from /metrics, and stops it:

| run | drafter | sampling, verification |
|---|---|---|
| greedy-plain | none | greedy, vLLM's |
| greedy-ptp | ptp head | greedy, vLLM's (an exact match already) |
| sampled-vllm | ptp head | T=0.7 k50 p0.95, vLLM's rejection sampler (its own uniforms) |
| sampled-exact-plain | none | T=0.7 k50 p0.95, ``PTP_VLLM_EXACT=1``: inverse CDF with u = f(seed, index) |
| sampled-exact-plain-batched | none | the same, every prompt at once |
| sampled-exact-ptp | ptp head | the same, drafts verified by exact match under their u |
| sampled-exact-ptp-batched | ptp head | the same, every prompt at once (rows share vLLM's batches) |
| sampled-exact-oracle | teacher's own picks under u | the same: the ceiling of any drafter (k + 1 per step) |

Checks: greedy-ptp equals greedy-plain; every exact run equals ``ptp.generate(..., "ar")`` with the
same seeds token for token; acceptance (tokens per teacher step) against ptp's draft-verify MAT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from transformers import AutoTokenizer

import ptp
from ptp.bench.prompts import first_prompt_ids
from ptp.sampling import BENCH_SAMPLING, SamplingConfig
from ptp.teachers import resolve_teacher
from ptp.vllm_plugin import drafter_order

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEED0 = 1000  # prompt i is sampled with seed SEED0 + i


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vllm_server(args, teacher: str, drafter: str | None, exact: bool, log: Path):
    port = free_port()
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", teacher,
           "--served-model-name", "teacher", "--host", "127.0.0.1", "--port", str(port), "--dtype", args.dtype,
           "--max-model-len", str(args.max_model_len), "--enforce-eager", "--max-num-seqs", str(args.num_prompts),
           "--no-async-scheduling", "--generation-config", "vllm"]
    if drafter:
        cmd += ["--speculative-config", json.dumps({"method": "custom_class", "num_speculative_tokens": args.draft_len,
                                                    "model": "ptp.vllm_plugin.proposer.PTPProposer"})]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PTP_PYTHON": args.ptp_python, "PTP_HEAD": args.head,
           "PTP_VLLM_EXACT": "1" if exact else "0", "PTP_DRAFTER": drafter or "head"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + args.start_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"vLLM exited with {proc.returncode}; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vLLM did not answer /health in {args.start_timeout} s; see {log}")
                time.sleep(1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def spec_counters(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:spec_decode") and "{" in line and "_created" not in line.split("{")[0]:
            name = line.split("{")[0]
            if "per_pos" in name:
                position = line.split('position="')[1].split('"')[0]
                name = f"{name}[{position}]"
            out[name] = out.get(name, 0.0) + float(line.split()[-1])
    return out


def complete(url: str, ids: list[int], sampling: SamplingConfig, seed: int, max_tokens: int) -> list[int]:
    body = {"model": "teacher", "prompt": ids, "max_tokens": max_tokens, "temperature": sampling.temperature,
            "top_k": sampling.top_k or -1, "top_p": sampling.top_p, "seed": seed, "return_token_ids": True}
    reply = httpx.post(f"{url}/v1/completions", json=body, timeout=1800)
    reply.raise_for_status()
    return reply.json()["choices"][0]["token_ids"]


def run_server(args, teacher, name, prompts, sampling, drafter, exact, batched) -> dict:
    """One server's run: token ids per prompt, tokens/s, spec-decode counters; or the error vLLM failed with."""
    print(f"[{name}] starting vLLM", flush=True)
    log = Path(args.out).with_suffix(f".{name}.log")
    with vllm_server(args, teacher, drafter, exact, log) as url:
        start = time.perf_counter()
        jobs = [(url, ids, sampling, SEED0 + i, args.max_tokens) for i, ids in enumerate(prompts)]
        try:
            if batched:
                with ThreadPoolExecutor(len(jobs)) as pool:
                    tokens = list(pool.map(lambda job: complete(*job), jobs))
            else:
                tokens = [complete(*job) for job in jobs]
        except httpx.HTTPStatusError as error:
            errors = [line.split("] ", 1)[-1] for line in log.read_text().splitlines()
                      if " ERROR " in line and "Error:" in line]
            cause = errors[0] if errors else str(error)  # the first one logged: the root cause
            print(f"[{name}] failed: {cause}", flush=True)
            return {"error": cause, "log": log.name}
        seconds = time.perf_counter() - start
        counters = spec_counters(url)
    n = sum(len(t) for t in tokens)
    drafts = counters.get("vllm:spec_decode_num_drafts_total", 0.0)
    accepted = counters.get("vllm:spec_decode_num_accepted_tokens_total", 0.0)
    result = {"tokens": tokens, "generated": n, "seconds": seconds, "tokens_per_s": n / seconds,
              "tokens_per_teacher_step": 1 + accepted / drafts if drafts else None, "spec_decode": counters}
    print(f"[{name}] {n} tokens, {n / seconds:.1f} tok/s, per step {result['tokens_per_teacher_step']}", flush=True)
    return result


def strip_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:-1] if tokens and tokens[-1] == eos else tokens


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Where vLLM, ptp, the head and the prompts are, and how the servers run (check.py and speed.py)."""
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    parser.add_argument("--ptp-python", default=str(ROOT / ".venv/bin/python"))
    parser.add_argument("--head", default=str(ROOT / "src/ptp/assets/smollm2-head"))
    parser.add_argument("--prompts", default=str(ROOT.parent / "shared/benchmarks/spec_bench_dev.jsonl"))
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--draft-len", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--start-timeout", type=float, default=600.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(parser)
    parser.add_argument("--runs", nargs="+", default=None, help="a subset of the runs (default: all)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    teacher = str(resolve_teacher("smollm2-135m-instruct"))
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    prompts = [ids for _, ids in first_prompt_ids(args.prompts, tokenizer, args.num_prompts)]
    order = drafter_order(args.head)
    greedy = SamplingConfig(temperature=0, order=order)
    sampled = SamplingConfig(BENCH_SAMPLING.temperature, BENCH_SAMPLING.top_k, BENCH_SAMPLING.top_p, order)
    plan = {  # name: (sampling, drafter, exact verifier, all prompts at once)
        "greedy-plain": (greedy, None, False, False),
        "greedy-ptp": (greedy, "head", False, False),
        "sampled-vllm": (sampled, "head", False, False),
        "sampled-exact-plain": (sampled, None, True, False),
        "sampled-exact-plain-batched": (sampled, None, True, True),
        "sampled-exact-ptp": (sampled, "head", True, False),
        "sampled-exact-ptp-batched": (sampled, "head", True, True),
        "sampled-exact-oracle": (sampled, "oracle", True, False),
    }
    runs = {name: run_server(args, teacher, name, prompts, *plan[name]) for name in (args.runs or plan)}

    model = ptp.PTPModel.from_pretrained(args.head).eval()
    eos = tokenizer.eos_token_id

    def ptp_runs(sampling: SamplingConfig, method: str):
        return [ptp.generate(model, ids, args.max_tokens, sampling, SEED0 + i, method, draft_len=args.draft_len,
                             eos_token_id=eos) for i, ids in enumerate(prompts)]

    ar, dv = ptp_runs(sampled, "ar"), {"greedy": ptp_runs(greedy, "draft-verify"),
                                       "sampled": ptp_runs(sampled, "draft-verify")}
    ar_tokens = [strip_eos(r.tokens.tolist(), eos) for r in ar]

    def same(a: list[list[int]], b: list[list[int]]) -> list[bool]:
        return [strip_eos(x, eos) == strip_eos(y, eos) for x, y in zip(a, b, strict=True)]

    checks = {}
    if all("tokens" in runs.get(name, {}) for name in ("greedy-plain", "greedy-ptp")):
        checks["greedy_ptp_equals_greedy_plain"] = same(runs["greedy-ptp"]["tokens"], runs["greedy-plain"]["tokens"])
    for name in runs:
        if name.startswith("sampled-exact") and "tokens" in runs[name]:
            checks[f"{name}_equals_ptp_ar"] = same(runs[name]["tokens"], ar_tokens)
    report = {
        "prompts": args.num_prompts, "max_tokens": args.max_tokens, "draft_len": args.draft_len, "dtype": args.dtype,
        "sampled": sampled.to_dict(), "seeds": [SEED0 + i for i in range(args.num_prompts)], "checks": checks,
        "ptp_draft_verify_mat": {k: sum(len(r.tokens) for r in v) / sum(r.teacher_calls for r in v)
                                 for k, v in dv.items()},
        "runs": {name: {k: v for k, v in r.items() if k != "tokens"} for name, r in runs.items()},
        "tokens": {name: r["tokens"] for name, r in runs.items() if "tokens" in r} | {"ptp-ar-sampled": ar_tokens},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "tokens"}, indent=2))


if __name__ == "__main__":
    main()
