"""Result counters, percentiles and the JSON shape that `--json` writes and the demo reads."""
from __future__ import annotations

import pytest

from loadgen.results import LoadResult, LoadStats, latency_summary


def test_latency_summary_percentiles():
    lat = [float(x) for x in range(1, 101)]  # 1..100 ms
    s = latency_summary(lat)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["max"] == 100.0
    assert latency_summary([]) == {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}


def test_stats_to_result_json():
    stats = LoadStats()
    for lag in (0.0, 0.002, 0.0):
        stats.record_send(lag)
    stats.record_drop()
    stats.record_ok(12.0, "yolo11n")
    stats.record_error("http_503", "x" * 500, retry_after=True)
    stats.record_error("timeout", "no response")
    assert stats.in_flight == 0 and stats.max_in_flight == 3 and stats.offered == 4
    result = LoadResult.from_stats(stats, url="http://h:1", service="yolo", duration_s=2.0, elapsed_s=4.0,
                                   requested_rate_rps=2.0, concurrency=3, timeout_s=1.0)
    doc = result.to_json()
    assert doc["offered"] == 4 and doc["sent"] == 3 and doc["dropped_client_side"] == 1
    assert doc["ok"] == 1 and doc["failed"] == 2
    assert doc["errors"] == {"http_503": 1, "timeout": 1}
    assert len(doc["error_examples"]["http_503"]) == 200
    assert doc["retry_after_seen"] == 1
    assert doc["variants"] == {"yolo11n": 1}
    assert doc["offered_rate_rps"] == 2.0 and doc["achieved_rate_rps"] == 1.5 and doc["ok_rate_rps"] == 0.25
    assert doc["latency_ms"]["p99"] == 12.0
    assert doc["max_send_lag_ms"] == pytest.approx(2.0)
