"""Result counters, percentiles and the JSON shape that `--json` writes and the demo reads."""
from __future__ import annotations

import pytest

from loadgen.results import LoadResult, LoadStats, latency_summary


def test_latency_summary_percentiles():
    lat = [float(x) for x in range(1, 101)]  # 1..100 ms
    s = latency_summary(lat)
    assert s["min"] == 1.0 and s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01) and s["p99.9"] == pytest.approx(99.901)
    assert s["mean"] == pytest.approx(50.5) and s["max"] == 100.0
    assert latency_summary([]) == dict.fromkeys(("min", "p50", "p90", "p95", "p99", "p99.9", "max", "mean"))


def test_stats_to_result_json():
    stats = LoadStats()
    for lag in (0.0, 0.002, 0.0):
        stats.record_send(0, lag)
    stats.record_drop(1)
    stats.record_ok(0, 12.0, 4.0, "yolo11n")
    stats.record_error(0, "http_503", "x" * 500, retry_after=True)
    stats.record_error(0, "timeout", "no response")
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
    assert doc["latency_ms"]["p99"] == 12.0 and doc["service_time_ms"]["p99"] == 4.0
    assert doc["max_send_lag_ms"] == pytest.approx(2.0)


def test_timeline_books_each_outcome_to_its_scheduled_second():
    stats = LoadStats()
    for second, latency in ((0, 10.0), (0, 30.0), (2, 50.0)):
        stats.record_send(second, 0.0)
        stats.record_ok(second, latency, latency / 2, "a")
    stats.record_send(2, 0.0)
    stats.record_error(2, "http_503", "busy")
    stats.record_drop(2)
    result = LoadResult.from_stats(stats, url="u", service="yolo", duration_s=4.0, elapsed_s=4.5,
                                   requested_rate_rps=1.0, concurrency=1, timeout_s=1.0)
    rows = result.timeline
    assert [r.second for r in rows] == [0, 1, 2, 3]  # idle seconds are rows too
    assert [(r.offered, r.sent, r.ok, r.failed, r.dropped_client_side) for r in rows] == \
        [(2, 2, 2, 0, 0), (0, 0, 0, 0, 0), (3, 2, 1, 1, 1), (0, 0, 0, 0, 0)]
    assert rows[2].errors == {"http_503": 1}
    assert rows[0].p95_ms == pytest.approx(29.0) and rows[0].p95_service_ms == pytest.approx(14.5)
    assert rows[1].p95_ms is None
