"""The load generator against a real HTTP server on 127.0.0.1 (tests/loadgen_fake_server.py).

Counts are compared with what the server itself answered; rates and latencies get loose,
statistical bounds (a few sigma, generous floors), never tight timing assertions.
"""
from __future__ import annotations

import math
import socket

import pytest

from loadgen.arrivals import RateTrace
from loadgen.generator import run_load_sync
from loadgen.payloads import synthetic_images, synthetic_questions
from tests.loadgen_fake_server import Action, FakeInferServer

IMAGES = synthetic_images(3, seed=0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_outcome_counted_by_kind():
    script = [Action("ok", "yolo11n"), Action("ok", "yolo11s"), Action("503"), Action("400"),
              Action("slow", delay_s=1.0), Action("close"), Action("ok", "yolo11n")]
    with FakeInferServer(script) as server:
        result = run_load_sync(server.url, "yolo", RateTrace.constant(60), 1.5, IMAGES, timeout_s=0.3, seed=1)
    t = server.tally
    assert result.sent == t.received > 40
    assert result.ok == t.answered["ok"]
    assert result.errors == {"http_400": t.answered["400"], "http_503": t.answered["503"],
                             "protocol_error": t.answered["close"], "timeout": t.answered["slow"]}
    assert result.retry_after_seen == t.answered["503"]
    assert result.variants == dict(t.variants)
    assert result.ok + result.failed == result.sent
    assert "malformed payload" in result.error_examples["http_400"]
    assert t.bad_bodies == [] and set(t.content_types) == {"image/jpeg"}


def test_percentiles_come_from_real_latencies():
    # three fast answers (10 ms) for every slow one (150 ms): p50 is fast, p95/p99 slow
    script = [Action("ok", "a", 0.010)] * 3 + [Action("ok", "b", 0.150)]
    with FakeInferServer(script) as server:
        result = run_load_sync(server.url, "yolo", RateTrace.constant(40), 1.5, IMAGES, seed=2)
    lat = result.latency_ms
    assert result.ok == server.tally.received > 20
    assert 10 <= lat["p50"] < 150
    assert 150 <= lat["p95"] <= lat["p99"] <= lat["max"] < 2000
    assert result.variants["a"] > result.variants["b"] > 0


def test_offered_rate_close_to_requested():
    with FakeInferServer([Action("ok", "a")]) as server:
        result = run_load_sync(server.url, "yolo", RateTrace.constant(100), 2.0, IMAGES, seed=3)
    expected = 200
    assert abs(result.offered - expected) < 5 * math.sqrt(expected)
    assert result.requested_rate_rps == 100
    assert result.dropped_client_side == 0 and result.sent == result.offered == server.tally.received


def test_concurrency_bound_drops_instead_of_queueing():
    # every answer takes 300 ms, so 3 slots serve ~10 req/s out of 60 offered: the rest are dropped,
    # and the offered rate is not lowered by the slow server (open loop)
    with FakeInferServer([Action("ok", "a", 0.300)]) as server:
        result = run_load_sync(server.url, "yolo", RateTrace.constant(60), 1.5, IMAGES, concurrency=3, seed=4)
    assert result.max_in_flight == 3 and server.tally.max_concurrent <= 3
    assert result.sent == server.tally.received == result.ok
    assert result.sent + result.dropped_client_side == result.offered
    assert result.dropped_client_side > result.sent
    assert abs(result.offered - 90) < 5 * math.sqrt(90)


def test_connection_refused_is_counted_not_raised():
    url = f"http://127.0.0.1:{_closed_port()}"
    result = run_load_sync(url, "yolo", RateTrace.constant(30), 1.0, IMAGES, seed=5)
    assert result.sent > 10 and result.ok == 0
    assert result.errors == {"connection_refused": result.sent}
    assert result.latency_ms["p50"] is None


def test_albert_sends_question_context_json():
    with FakeInferServer([Action("ok", "base")]) as server:
        result = run_load_sync(server.url, "albert", RateTrace.constant(30), 1.0,
                               synthetic_questions(4, seed=0), seed=6)
    assert result.ok == server.tally.received > 10
    assert server.tally.bad_bodies == [] and set(server.tally.content_types) == {"application/json"}


def test_progress_callback_sees_live_counts():
    seen: list[tuple[float, int]] = []
    with FakeInferServer([Action("ok", "a")]) as server:
        result = run_load_sync(server.url, "yolo", RateTrace.constant(30), 1.0, IMAGES, seed=7,
                               on_progress=lambda elapsed, stats: seen.append((elapsed, stats.sent)))
    assert len(seen) >= 3
    assert [e for e, _ in seen] == sorted(e for e, _ in seen)
    assert seen[-1][1] == result.sent


def test_run_load_rejects_nonsense_arguments():
    with pytest.raises(ValueError, match="at least one payload"):
        run_load_sync("http://127.0.0.1:1", "yolo", RateTrace.constant(1), 1.0, [])


def test_plain_rate_and_default_payloads_for_the_demo():
    with FakeInferServer([Action("ok", "base")]) as server:
        result = run_load_sync(server.url, "albert", 20.0, 1.0, seed=8)
    assert result.ok == server.tally.received > 5
    assert server.tally.bad_bodies == [] and set(server.tally.content_types) == {"application/json"}
