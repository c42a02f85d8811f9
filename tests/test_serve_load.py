"""A small, fast run of scripts/load_test.py: a real `ptp serve` subprocess under concurrent streams."""

from __future__ import annotations

import json

import pytest

from test_serve_support import load_test_module

pytestmark = pytest.mark.slow  # a live `ptp serve` subprocess under load


def test_concurrent_streams_match_autoregressive_sampling_and_memory_stays_flat(tmp_path):
    out = tmp_path / "load.json"
    args = ["--tiny", "--clients", "8", "--requests", "2", "--max-tokens", "12", "--deadline", "120", "--baseline",
            "--out", str(out)]
    status = load_test_module().main(args)
    report = json.loads(out.read_text())
    assert report["requests"] == 16 and report["ok"] == 16, report["failures"]
    assert report["server_errors_5xx"] == 0 and report["ar_mismatches"] == []
    assert abs(report["rss_growth"]) <= 0.10
    assert report["latency_p95_s"] >= report["latency_p50_s"] > 0 and report["tokens_per_s"] > 0
    assert report["one_at_a_time"]["ar_mismatches"] == [] and report["one_at_a_time"]["max_batch"] == 1
    assert report["throughput_vs_one_at_a_time"] > 0 and report["p95_vs_lone"] > 0
    assert status == 0 and report["passed"]
