"""Bounded load test of ``ptp serve``: concurrent streaming clients, loopback only, stops by itself.

It starts the server as a subprocess on a free loopback port, computes every request's expected text
here with autoregressive sampling (``ptp.generate(method="ar")`` with the request's seed), warms the
server up and records its resident memory, then runs ``--clients`` concurrent clients that each send
``--requests`` streaming completions one after another through the official ``openai`` client.
Afterwards it records the memory again, stops the server and writes JSON: p50/p95 latency and time
to first token, tokens/s, MAT, memory before/after, and every failure. Exit status 1 if any request
failed (a 5xx or any error), any text differs from its seed's AR text, or memory grew more than
``--memory-tolerance``. Every request has a timeout and the whole run a deadline.

    python scripts/load_test.py --tiny --out runs/load_test.json      # a tiny random checkpoint
    python scripts/load_test.py --model DIR --clients 32 --requests 4 --max-tokens 32
    python scripts/load_test.py --threads 2 --baseline --out runs/load.json  # batched vs one at a time

With --baseline the same load also runs on a one-at-a-time server (--max-batch 1), and the report
gives the throughput ratio; ``p95_vs_lone`` is the p95 latency over the median of lone requests
timed on the same server before the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import torch

import ptp
from ptp.cli.common import tokenizer_dir
from ptp.testing import SERVE_PROMPTS, tiny_serve_checkpoint

HEALTH_WAIT_SECONDS = 180.0  # model loading on a busy 2-core machine
SETTLE_SECONDS = 1.0  # pause before reading memory, so freed buffers are returned
REFERENCE_BATCH = 16  # rows of the batched AR reference
LONE_REQUESTS = 3  # lone requests timed before the load (their median is the lone latency)


def expected_texts(model_dir: Path, jobs: list[dict], sampling: ptp.SamplingConfig) -> dict[int, str]:
    """Each job's text under autoregressive sampling with its seed (the lossless reference).

    Decoded REFERENCE_BATCH prompts at a time: a row of a batch emits exactly its lone AR tokens
    (tests/test_batch.py), and it is several times faster than one at a time on a CPU.
    """
    from transformers import AutoTokenizer

    model = ptp.PTPModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))
    prompts = [tokenizer(job["prompt"]).input_ids for job in jobs]
    outs = ptp.generate(model, prompts, [job["max_tokens"] for job in jobs], sampling, [job["seed"] for job in jobs],
                        "ar", max_batch=REFERENCE_BATCH)
    return {job["seed"]: tokenizer.decode(out.tokens, skip_special_tokens=True)
            for job, out in zip(jobs, outs, strict=True)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def running_server(model_dir: Path, port: int, threads: int, queue_size: int, log: Path, max_batch: int | None = None,
                   method: str | None = None):
    """``ptp serve`` in a subprocess on 127.0.0.1:port; yields its pid once /health answers."""
    cmd = [sys.executable, "-m", "ptp.cli", "--threads", str(threads), "serve", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--queue-size", str(queue_size), "--log-level", "warning"]
    cmd += ["--max-batch", str(max_batch)] if max_batch else []
    cmd += ["--method", method] if method else []
    with log.open("w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + HEALTH_WAIT_SECONDS
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer /health in {HEALTH_WAIT_SECONDS} s; see {log}")
                time.sleep(0.2)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def one_request(client: openai.AsyncOpenAI, name: str, job: dict, sampling: ptp.SamplingConfig) -> dict:
    """One streaming completion; returns its text, timings and the final chunk's usage/ptp blocks."""
    started = time.perf_counter()
    record = {"seed": job["seed"], "text": "", "first_token_s": None, "error": None}
    try:
        stream = await client.completions.create(
            model=name, prompt=job["prompt"], max_tokens=job["max_tokens"], seed=job["seed"], stream=True,
            temperature=sampling.temperature, top_p=sampling.top_p, extra_body={"top_k": sampling.top_k},
        )
        async for chunk in stream:
            piece = chunk.choices[0].text if chunk.choices else ""
            if piece and record["first_token_s"] is None:
                record["first_token_s"] = time.perf_counter() - started
            record["text"] += piece
            if chunk.usage is not None:
                record["tokens"] = chunk.usage.completion_tokens
                record["ptp"] = (chunk.model_extra or {}).get("ptp")
    except openai.APIStatusError as err:
        record["error"] = f"HTTP {err.status_code}: {err.message}"
        record["status"] = err.status_code
    except (openai.APIError, httpx.HTTPError) as err:
        record["error"] = f"{type(err).__name__}: {err}"
    record["latency_s"] = time.perf_counter() - started
    return record


async def run_clients(base_url: str, name: str, jobs_per_client: list[list[dict]],
                      sampling: ptp.SamplingConfig, timeout: float) -> list[dict]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=timeout)

    async def client_loop(jobs: list[dict]) -> list[dict]:
        return [await one_request(client, name, job, sampling) for job in jobs]

    try:
        per_client = await asyncio.gather(*(client_loop(jobs) for jobs in jobs_per_client))
    finally:
        await client.close()
    return [record for records in per_client for record in records]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summarise(records: list[dict], expected: dict[int, str], wall: float, rss_before: int, rss_after: int,
              tolerance: float) -> dict:
    failures = [r for r in records if r["error"]]
    mismatches = [r["seed"] for r in records if not r["error"] and r["text"] != expected[r["seed"]]]
    latencies = [r["latency_s"] for r in records if not r["error"]]
    first = [r["first_token_s"] for r in records if r["first_token_s"] is not None]
    tokens = sum(r.get("tokens", 0) for r in records)
    teacher_calls = sum((r.get("ptp") or {}).get("teacher_calls", 0) for r in records)
    growth = (rss_after - rss_before) / rss_before
    return {
        "requests": len(records),
        "ok": len(records) - len(failures),
        "failures": [r["error"] for r in failures][:20],
        "server_errors_5xx": sum(1 for r in failures if r.get("status", 0) >= 500),
        "ar_mismatches": mismatches,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "first_token_p50_s": percentile(first, 50),
        "first_token_p95_s": percentile(first, 95),
        "completion_tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "mat": tokens / teacher_calls if teacher_calls else 0.0,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_growth": growth,
        "passed": not failures and not mismatches and abs(growth) <= tolerance,
    }


def make_jobs(clients: int, requests: int, max_tokens: int) -> list[list[dict]]:
    """Client c's j-th request: a fixed prompt and a seed unique to the request."""
    return [[{"prompt": SERVE_PROMPTS[(c + j) % len(SERVE_PROMPTS)], "seed": c * requests + j, "max_tokens": max_tokens}
             for j in range(requests)] for c in range(clients)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="PTP checkpoint directory (default: the bundled model)")
    p.add_argument("--tiny", action="store_true", help="build and serve a tiny random checkpoint instead")
    p.add_argument("--clients", type=int, default=32, help="concurrent streaming clients")
    p.add_argument("--requests", type=int, default=4, help="requests per client, sent one after another")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of every request")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server (and the AR reference)")
    p.add_argument("--max-batch", type=int, default=None, help="the server's --max-batch (default: its own)")
    p.add_argument("--method", default=None, help="the server's --method (default: the model's fastest)")
    p.add_argument("--baseline", action="store_true",
                   help="run the same load on a one-at-a-time server (--max-batch 1) too and compare")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole load phase")
    p.add_argument("--memory-tolerance", type=float, default=0.10, help="allowed relative RSS growth")
    p.add_argument("--out", default=None, help="write the JSON report here (it is printed too)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ptp-load-") as tmp:
        if args.tiny:
            model_dir = tiny_serve_checkpoint(Path(tmp) / "tiny")
        else:
            from ptp.bundled import default_model_dir

            model_dir = Path(args.model) if args.model else default_model_dir()
        report = load_test(args, model_dir, Path(tmp) / "server.log")
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if report["passed"] else 1


def load_test(args: argparse.Namespace, model_dir: Path, log: Path) -> dict:
    sampling = ptp.PTPModel.from_pretrained(model_dir).cfg.sampling
    jobs = make_jobs(args.clients, args.requests, args.max_tokens)
    expected = expected_texts(model_dir, [job for client in jobs for job in client], sampling)
    report = serve_load(args, model_dir, log, jobs, expected, sampling, args.max_batch)
    report["config"] = {"model": str(model_dir), "clients": args.clients, "requests_per_client": args.requests,
                        "max_tokens": args.max_tokens, "threads": args.threads, "sampling": sampling.to_dict(),
                        "max_batch": args.max_batch, "method": args.method,
                        "torch": torch.__version__, "cpus": len(os.sched_getaffinity(0))}
    report["p95_vs_lone"] = report["latency_p95_s"] / report["lone_latency_s"]
    if args.baseline:
        base = serve_load(args, model_dir, log, jobs, expected, sampling, max_batch=1)
        report["one_at_a_time"] = base
        report["throughput_vs_one_at_a_time"] = report["tokens_per_s"] / base["tokens_per_s"]
        report["passed"] = report["passed"] and base["passed"]
    return report


def serve_load(args: argparse.Namespace, model_dir: Path, log: Path, jobs: list[list[dict]],
               expected: dict[int, str], sampling: ptp.SamplingConfig, max_batch: int | None) -> dict:
    """Start a server, time lone requests, run the load, summarise it."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with running_server(model_dir, port, args.threads, max(64, 2 * args.clients), log, max_batch,
                        args.method) as pid:
        name = httpx.get(f"{base_url}/models", timeout=10).json()["data"][0]["id"]
        warm_up = make_jobs(1, 4, args.max_tokens)
        asyncio.run(run_clients(base_url, name, warm_up, sampling, args.timeout))
        lone = asyncio.run(run_clients(base_url, name, make_jobs(1, LONE_REQUESTS, args.max_tokens), sampling,
                                       args.timeout))
        time.sleep(SETTLE_SECONDS)
        rss_before = rss_bytes(pid)
        started = time.perf_counter()
        records = asyncio.run(asyncio.wait_for(
            run_clients(base_url, name, jobs, sampling, args.timeout), args.deadline))
        wall = time.perf_counter() - started
        time.sleep(SETTLE_SECONDS)
        rss_after = rss_bytes(pid)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    report = summarise(records, expected, wall, rss_before, rss_after, args.memory_tolerance)
    report["max_batch"] = max_batch
    report["lone_latency_s"] = statistics.median(r["latency_s"] for r in lone)
    report["server_mat"] = next((float(line.split()[1]) for line in metrics.splitlines()
                                 if line.startswith("ptp_mean_accepted_tokens_per_call ")), None)
    return report


if __name__ == "__main__":
    sys.exit(main())
