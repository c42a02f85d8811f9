"""vLLM 0.32 on this CPU with the SmolLM2 teacher, without and with the ptp drafter (custom_class).

Run with ptp's interpreter after ``bash experiments/vllm/setup.sh``:
    .venv/bin/python experiments/vllm/check.py --out experiments/vllm/results/check.json

For each server (plain, then speculative with ``ptp_vllm.proposer.PTPProposer``) it starts vLLM's
OpenAI server on 127.0.0.1, sends the first N Spec-Bench dev first turns one at a time (greedy,
chat completions), records texts, tokens/s and vLLM's spec-decode counters from /metrics, and
stops it. Then: greedy texts must be identical; acceptance is compared with ``ptp.generate``
draft-verify on the same prompts (same head, same teacher).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
from transformers import AutoTokenizer

import ptp
from ptp.bench.prompts import first_prompt_ids, read_questions, select_questions
from ptp.teachers import resolve_teacher

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vllm_server(args, teacher: str, speculative: dict | None, log: Path):
    port = free_port()
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", teacher,
           "--served-model-name", "teacher", "--host", "127.0.0.1", "--port", str(port), "--dtype", args.dtype,
           "--max-model-len", str(args.max_model_len), "--enforce-eager", "--max-num-seqs", "4"]
    if speculative:
        cmd += ["--speculative-config", json.dumps(speculative)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(HERE), "PTP_PYTHON": args.ptp_python,
           "PTP_HEAD": args.head}
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


def run_server(args, teacher, speculative, questions, log) -> dict:
    with vllm_server(args, teacher, speculative, log) as url:
        answers, tokens, seconds = [], 0, 0.0
        for q in questions:
            body = {"model": "teacher", "messages": [{"role": "user", "content": q.turns[0]}],
                    "max_tokens": args.max_tokens, "temperature": 0.0, "seed": 0}
            start = time.perf_counter()
            reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).json()
            seconds += time.perf_counter() - start
            answers.append(reply["choices"][0]["message"]["content"])
            tokens += reply["usage"]["completion_tokens"]
        return {"texts": answers, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                "spec_decode": spec_counters(url)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    teacher = str(resolve_teacher("smollm2-135m-instruct"))
    _, questions = read_questions(args.prompts)
    questions = select_questions(questions, limit=args.num_prompts)
    plain = run_server(args, teacher, None, questions, out.with_suffix(".plain.log"))
    speculative = {"method": "custom_class", "model": "ptp_vllm.proposer.PTPProposer",
                   "num_speculative_tokens": args.draft_len}
    spec = run_server(args, teacher, speculative, questions, out.with_suffix(".spec.log"))
    model = ptp.PTPModel.from_pretrained(args.head).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    greedy = ptp.SamplingConfig(temperature=0)
    ptp_runs = [ptp.generate(model, ids, args.max_tokens, greedy, 0, "draft-verify", draft_len=args.draft_len,
                             eos_token_id=tokenizer.eos_token_id)
                for _, ids in first_prompt_ids(args.prompts, tokenizer, args.num_prompts)]
    counters = spec["spec_decode"]
    drafts = counters.get("vllm:spec_decode_num_drafts_total", 0.0)
    accepted = counters.get("vllm:spec_decode_num_accepted_tokens_total", 0.0)
    report = {
        "prompts": args.num_prompts, "max_tokens": args.max_tokens, "draft_len": args.draft_len,
        "dtype": args.dtype, "greedy_identical": plain["texts"] == spec["texts"],
        "identical_per_prompt": [a == b for a, b in zip(plain["texts"], spec["texts"], strict=True)],
        "vllm_plain_tokens_per_s": plain["tokens_per_s"], "vllm_ptp_tokens_per_s": spec["tokens_per_s"],
        "vllm_speedup": spec["tokens_per_s"] / plain["tokens_per_s"],
        "vllm_mean_acceptance_length": 1 + accepted / drafts if drafts else None,
        "vllm_spec_decode": counters,
        "ptp_draft_verify_mat": sum(len(r.tokens) for r in ptp_runs) / sum(r.teacher_calls for r in ptp_runs),
        "plain_texts": plain["texts"], "spec_texts": spec["texts"],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if not k.endswith("texts")}, indent=2))


if __name__ == "__main__":
    main()
