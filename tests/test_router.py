"""The ingress routing rules: exact shares, drain, bounded queues, saturation, declarative sync."""
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.serving.router import (
    TRANSIT_STALE_S,
    RouteEntry,
    Router,
    RoutingTable,
    per_ingress_bound,
    queue_bound,
)


def _entry(name: str, share: float, max_queue: int = 1000, draining: bool = False) -> RouteEntry:
    return RouteEntry(name, "svc", name.split("-")[0], share, max_queue, draining)


def _router(shares: dict[str, float], max_queue: int = 1000) -> Router:
    r = Router()
    r.sync(_entry(n, s, max_queue) for n, s in shares.items())
    return r


def _route_n(r: Router, n: int, release: bool = True) -> Counter:
    c: Counter = Counter()
    for _ in range(n):
        got = r.acquire()
        assert got is not None
        c[got.name] += 1
        if release:
            r.release(got.name)
    return c


def test_traffic_follows_shares_exactly():
    r = _router({"a-1": 0.5, "b-1": 0.3, "c-1": 0.2})
    assert _route_n(r, 1000) == Counter({"a-1": 500, "b-1": 300, "c-1": 200})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=7))
def test_shares_hold_within_one_request_per_replica(weights):
    shares = {f"v{i}-x": float(w) for i, w in enumerate(weights)}
    r = _router(shares)
    n = 500
    got = _route_n(r, n)
    total = sum(weights)
    for name, w in shares.items():
        assert abs(got[name] - n * w / total) <= 1.0 + 1e-9


def test_draining_replica_gets_nothing_and_finishes_in_flight():
    r = _router({"a-1": 0.5, "b-1": 0.5})
    held = [r.acquire() for _ in range(4)]
    assert r.inflight("a-1") == 2
    r.sync([_entry("a-1", 0.0, draining=True), _entry("b-1", 0.5)])
    assert set(_route_n(r, 50)) == {"b-1"}
    assert r.inflight("a-1") == 2  # a new table keeps the requests already in flight
    for h in held:
        r.release(h.name)
    assert r.inflight("a-1") == 0


def test_full_replica_is_skipped_then_saturation_returns_none():
    r = _router({"a-1": 0.9, "b-1": 0.1}, max_queue=3)
    picks = [r.acquire() for _ in range(6)]
    assert Counter(p.name for p in picks) == Counter({"a-1": 3, "b-1": 3})
    assert r.acquire() is None  # both queues full: the ingress answers 503
    r.release("b-1")
    assert r.acquire().name == "b-1"


def test_slow_transit_on_a_busy_host_is_not_counted_against_the_slice_queue():
    r = _router({"a-1": 1.0}, max_queue=4)
    r.observe("a-1", slice_s=0.03, total_s=2.03, now=1.0)  # a cold first answer: transit blended in from 0
    assert [p["admits"] for p in r.snapshot(1.0)] == [4 * 4]  # (30 ms + 0.4 s) / 30 ms: capped at TRANSIT_MAX
    for k in range(30):  # then the host is busy: 30 ms on the slice, 10 ms in transit
        r.observe("a-1", slice_s=0.03, total_s=0.04, now=1.0 + k * 0.1)
    assert sum(r.acquire(4.0) is not None for _ in range(10)) == 5  # 4 × (30 + 10) / 30
    for k in range(30):  # a stall: 0.5 s in transit, 30 ms on the slice
        r.observe("a-1", slice_s=0.03, total_s=0.53, now=4.0 + k * 0.1)
    assert sum(r.acquire(7.0) is not None for _ in range(50)) == 4 * 4 - 5  # never over TRANSIT_MAX × bound
    assert [p["admits"] for p in r.snapshot(7.0 + TRANSIT_STALE_S + 1)] == [4]  # no answers for a while: plain bound
    for k in range(30):  # a slow slice (its queue grows) admits no more than its bound says
        r.observe("a-1", slice_s=1.0, total_s=1.01, now=20.0 + k)
    assert [p["admits"] for p in r.snapshot(50.0)] == [4]
    r.observe("a-1", slice_s=math.inf, total_s=math.inf, now=50.0)  # a bad report changes nothing
    r.observe("a-1", slice_s=math.nan, total_s=1.0, now=50.0)
    assert [p["admits"] for p in r.snapshot(50.0)] == [4]
    r.observe("nope", 0.1, 0.2, now=50.0)  # a replica that left the table is ignored


def test_zero_share_replica_is_warm_but_unused():
    r = _router({"a-1": 1.0, "b-1": 0.0}, max_queue=1000)  # b started and warming: no traffic yet
    assert set(_route_n(r, 20)) == {"a-1"}
    r.sync([_entry("a-1", 0.0), _entry("b-1", 1.0)])
    assert set(_route_n(r, 20)) == {"b-1"}


def test_no_route_before_the_first_table_is_not_saturation():
    r = Router()
    assert not r.has_routes() and r.acquire() is None
    r.sync([_entry("a-1", 1.0)])
    assert r.has_routes()


def test_bad_entries_are_rejected_with_names():
    with pytest.raises(ValueError, match="zzz.*>= 0"):
        _entry("zzz", -1.0)
    with pytest.raises(ValueError, match="c.*max_queue"):
        _entry("c", 1.0, max_queue=0)


def test_queue_bound_follows_sla_and_batch_and_is_split_over_ingress_replicas():
    assert queue_bound(100.0, 200.0, 1) == 20  # 100 req/s × 0.2 s
    assert queue_bound(1.0, 100.0, 8) == 32  # never below four batches
    assert per_ingress_bound(20, 2) == 10 and per_ingress_bound(5, 2) == 3 and per_ingress_bound(1, 4) == 1


def test_live_ingress_replicas_split_the_bound_and_the_survivor_takes_it_all():
    r = _router({"a": 1.0}, max_queue=4)
    r.set_peers(2)
    assert [r.acquire() is not None for _ in range(3)] == [True, True, False]  # its half of 4
    r.set_peers(1)  # the other ingress replica died
    assert r.acquire() is not None and r.acquire() is not None and r.acquire() is None


def test_when_every_routed_replica_is_ejected_a_warm_spare_takes_the_requests():
    r = _router({"a-1": 1.0, "b-1": 0.0, "c-1": 0.0})
    r.sync([_entry("a-1", 1.0), _entry("b-1", 0.0), _entry("c-1", 0.0, draining=True)])
    assert r.acquire(now=1.0).name == "a-1"
    r.eject("a-1", now=1.0)
    assert {r.acquire(now=2.0).name for _ in range(3)} == {"b-1"}  # never the draining one
    r.sync([_entry("a-1", 1.0), _entry("c-1", 0.0, draining=True)])
    assert r.acquire(now=2.0) is None  # no spare left: saturated


def test_a_replica_whose_call_failed_is_skipped_for_a_while():
    r = _router({"a-1": 0.5, "b-1": 0.5})
    r.eject("a-1", now=100.0, seconds=5.0)
    assert {r.acquire(now=101.0).name for _ in range(4)} == {"b-1"}
    r.sync([_entry("a-1", 0.5), _entry("b-1", 0.5)])  # a new table does not forget the ejection
    assert r.acquire(now=104.0).name == "b-1"
    assert "a-1" in {r.acquire(now=105.5).name for _ in range(4)}


def test_new_queue_bounds_keep_shares_and_inflight():
    """An SLA change (POST /v1/config) re-bounds admission without dropping the routes' traffic."""
    r = _router({"a": 1.0}, max_queue=2)
    assert r.acquire() is not None and r.acquire() is not None
    assert r.acquire() is None  # bound 2 reached
    r.sync([_entry("a", 1.0, max_queue=3)])
    assert r.acquire() is not None  # same share, same in-flight count, one more admitted
    assert r.acquire() is None


def test_table_equality_ignores_the_version():
    a = RoutingTable(1, (_entry("a-1", 1.0),))
    assert a.same_routes(RoutingTable(7, (_entry("a-1", 1.0),)))
    assert not a.same_routes(RoutingTable(7, (_entry("a-1", 0.5),)))
    assert not a.same_routes(None)
    assert RoutingTable(2, (_entry("a-1", 1.0), RouteEntry("q", "albert", "base", 1.0, 4))).services() == ("albert", "svc")
