"""Each decoding method's slowdown beside a CPU-bound neighbour, under several thread set-ups.

For every set-up (torch threads and OpenMP environment) this runs ``ptp bench`` twice in fresh
processes: once on an idle machine and once while ``--neighbours`` single-threaded busy loops run,
and reports tokens/s of each method in both and the slowdown (idle / busy). Output: JSON + a
Markdown table. The set-ups are given as NAME=THREADS[:ENV=VALUE,...]; THREADS "auto" means the
command line's own default (no --threads flag).

Example (2-core machine):
  python scripts/busy_neighbour.py --setup auto=auto --setup t1=1 --setup t2-spin=2:PTP_OMP_PASSIVE=0 \
      --num-prompts 2 --max-new-tokens 48 --json runs/busy.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def _parse_setup(text: str) -> tuple[str, str, dict[str, str]]:
    name, _, spec = text.partition("=")
    threads, _, env_text = spec.partition(":")
    if not name or not threads:
        raise argparse.ArgumentTypeError(f"expected NAME=THREADS[:ENV=VALUE,...], got {text!r}")
    env = dict(item.split("=", 1) for item in env_text.split(",") if item)
    return name, threads, env


def _bench(threads: str, env: dict[str, str], bench_args: list[str]) -> dict[str, float]:
    """tokens/s per method of one ``ptp bench`` run in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "ptp.cli"] + ([] if threads == "auto" else ["--threads", threads])
        cmd += ["bench", *bench_args, "--json", str(out)]
        subprocess.run(cmd, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())["results"][0]
    return {m["method"]: m["tokens_per_second"] for m in result["methods"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="append", type=_parse_setup, required=True,
                        help="NAME=THREADS[:ENV=VALUE,...] (repeatable)")
    parser.add_argument("--neighbours", type=int, default=1, help="busy single-threaded processes beside the bench")
    parser.add_argument("--model", default=None, help="PTP checkpoint (default: the shipped drafter)")
    parser.add_argument("--methods", nargs="+", default=["ar", "draft-verify"])
    parser.add_argument("--num-prompts", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--sampling", default="0.7,50,0.95")
    parser.add_argument("--json", default="runs/busy_neighbour.json")
    args = parser.parse_args()
    bench_args = ["--methods", *args.methods, "--num-prompts", str(args.num_prompts),
                  "--max-new-tokens", str(args.max_new_tokens), "--sampling", args.sampling]
    if args.model:
        bench_args += ["--model", args.model]
    rows = []
    for name, threads, env in args.setup:
        idle = _bench(threads, env, bench_args)
        print(f"{name}: idle {idle}", file=sys.stderr, flush=True)
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.neighbours)]
        for p in spinners:
            p.start()
        time.sleep(1.0)
        try:
            busy = _bench(threads, env, bench_args)
        finally:
            for p in spinners:
                p.terminate()
                p.join()
        print(f"{name}: busy {busy}", file=sys.stderr, flush=True)
        for method in idle:
            rows.append({"setup": name, "threads": threads, "env": env, "method": method,
                         "idle_tokens_per_second": idle[method], "busy_tokens_per_second": busy[method],
                         "slowdown": round(idle[method] / max(busy[method], 1e-9), 2)})
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"cpu_count": os.cpu_count(), "neighbours": args.neighbours, "bench_args": bench_args, "rows": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")
    lines = ["| set-up | method | idle tok/s | busy tok/s | slowdown |", "|---|---|---|---|---|"]
    lines += [f"| {r['setup']} | {r['method']} | {r['idle_tokens_per_second']:.1f} | "
              f"{r['busy_tokens_per_second']:.1f} | {r['slowdown']:.2f}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
