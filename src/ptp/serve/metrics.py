"""Server metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

Terms: calls are network forward calls after the prefill; teacher calls are the calls that verified
tokens; MAT = generated tokens / teacher calls (plain autoregressive decoding = 1.00).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; request latencies on a 2-core CPU span ~5 ms (a 429) to tens of seconds (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # rows per decoding step
MAT_BUCKETS = (1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)  # a request's accepted tokens per call
STATM = Path("/proc/self/statm")  # Linux: resident pages are its second field
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Histogram:
    """Cumulative-bucket histogram with one label set per observation key."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(buckets))
        self.sums: dict[tuple, float] = defaultdict(float)
        self.totals: dict[tuple, int] = defaultdict(int)

    def observe(self, labels: tuple, value: float) -> None:
        counts = self.counts[labels]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        self.sums[labels] += value
        self.totals[labels] += 1

    def lines(self, name: str, label_names: tuple[str, ...]) -> list[str]:
        out = []
        for labels, counts in sorted(self.counts.items()):
            base = _labels(label_names, labels)
            bounds = [*(str(b) for b in self.buckets), "+Inf"]
            for bound, count in zip(bounds, [*counts, self.totals[labels]], strict=True):
                le = 'le="' + bound + '"'
                out.append(f"{name}_bucket{_with(base, le)} {count}")
            out.append(f"{name}_sum{_braces(base)} {self.sums[labels]}")
            out.append(f"{name}_count{_braces(base)} {self.totals[labels]}")
        return out


class Metrics:
    """Counters and histograms of one server; safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (endpoint, status) -> count
        self.latency = Histogram()  # (endpoint,) -> seconds from request to last byte
        self.first_token = Histogram()  # (endpoint,) -> seconds from request to first token
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.calls = 0
        self.teacher_calls = 0
        self.cancelled = 0  # requests whose client went away before the end (their generation is cancelled)
        self.batch_rows = Histogram(BATCH_BUCKETS)  # () -> rows decoded together in one step
        self.request_mat = Histogram(MAT_BUCKETS)  # () -> each finished request's MAT (its acceptance)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, str(status))] += 1
            self.latency.observe((endpoint,), seconds)

    def observe_first_token(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            self.first_token.observe((endpoint,), seconds)

    def observe_prompt(self, tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += tokens

    def observe_chunk(self, tokens: int, calls: int) -> None:
        """One teacher call's verified tokens and the network calls it took."""
        with self._lock:
            self.generated_tokens += tokens
            self.calls += calls
            self.teacher_calls += 1

    def observe_step(self, rows: int) -> None:
        """One decoding step of the batch, over ``rows`` requests."""
        with self._lock:
            self.batch_rows.observe((), rows)

    def observe_request_mat(self, mat: float) -> None:
        """A finished request's tokens per teacher call."""
        with self._lock:
            self.request_mat.observe((), mat)

    def observe_cancel(self) -> None:
        with self._lock:
            self.cancelled += 1

    def render(self, queue_depth: int, busy: bool, batch_size: int = 0) -> str:
        """The exposition text; gauges that live elsewhere are passed in."""
        with self._lock:
            mat = self.generated_tokens / self.teacher_calls if self.teacher_calls else 0.0
            lines = _family("ptp_requests_total", "counter", "HTTP requests by endpoint and status code")
            lines += [f"ptp_requests_total{_braces(_labels(('endpoint', 'status'), k))} {v}"
                      for k, v in sorted(self.requests.items())]
            for name, kind, text, value in (
                ("ptp_prompt_tokens_total", "counter", "prompt tokens of started generations", self.prompt_tokens),
                ("ptp_generated_tokens_total", "counter", "tokens generated, cancelled generations included",
                 self.generated_tokens),
                ("ptp_forward_calls_total", "counter", "network calls after the prefill", self.calls),
                ("ptp_teacher_calls_total", "counter", "calls that verified tokens (MAT's denominator)",
                 self.teacher_calls),
                ("ptp_mean_accepted_tokens_per_call", "gauge", "MAT over all generations so far", mat),
                ("ptp_cancelled_generations_total", "counter", "requests whose client left before the end",
                 self.cancelled),
                ("ptp_queue_depth", "gauge", "requests waiting for the model worker", queue_depth),
                ("ptp_worker_busy", "gauge", "1 while the model worker is generating", int(busy)),
                ("ptp_batch_size", "gauge", "requests in the running batch", batch_size),
            ):
                lines += [*_family(name, kind, text), f"{name} {value}"]
            lines += _family("ptp_request_latency_seconds", "histogram", "time from request to last byte")
            lines += self.latency.lines("ptp_request_latency_seconds", ("endpoint",))
            lines += _family("ptp_time_to_first_token_seconds", "histogram", "time from request to first token")
            lines += self.first_token.lines("ptp_time_to_first_token_seconds", ("endpoint",))
            lines += _family("ptp_batch_rows", "histogram", "requests decoded together per decoding step")
            lines += self.batch_rows.lines("ptp_batch_rows", ())
            lines += _family("ptp_request_accepted_tokens_per_call", "histogram",
                             "MAT of each finished request (its drafts' acceptance)")
            lines += self.request_mat.lines("ptp_request_accepted_tokens_per_call", ())
        rss = resident_bytes()
        if rss is not None:
            lines += [*_family("process_resident_memory_bytes", "gauge", "resident memory of the server"),
                      f"process_resident_memory_bytes {rss}"]
        return "\n".join(lines) + "\n"


def resident_bytes() -> int | None:
    """This process's resident set size in bytes (None where /proc is missing)."""
    try:
        return int(STATM.read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def _family(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _labels(names: tuple[str, ...], values: tuple) -> str:
    escaped = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True))


def _with(base: str, extra: str) -> str:
    return "{" + (f"{base},{extra}" if base else extra) + "}"


def _braces(base: str) -> str:
    return "{" + base + "}" if base else ""
