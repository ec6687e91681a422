"""GET /metrics body: parse `render_metrics` output with prometheus-client's own parser and check values."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from configs import load_services
from controller.accounting.attribution import Accountant, HostEnergy, SliceActivity
from controller.accounting.metrics import (
    LATENCY_BUCKETS_S,
    AccountingSnapshot,
    AccountingTotals,
    ReplicaPlacement,
    render_metrics,
)
from controller.carbon.base import CarbonReading
from controller.serving.counters import LatencyHistogram, ServingCounters, bucket_of, bucket_upper_s, sum_counters
from models.performance import PerformanceModel


def _parse(body: bytes):
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    return families, samples


def lab(**kw) -> tuple:
    return tuple(sorted(kw.items()))


def _serving() -> ServingCounters:
    """Two ingress replicas' counters, merged as the control bus will."""
    a, b = ServingCounters(), ServingCounters()
    for ms in (5, 20, 30):
        a.record_ok("yolo", "yolo11n", "yolo-r0", ms / 1000, ms / 2000)
    b.record_ok("yolo", "yolo11n", "yolo-r0", 0.2, 0.15)
    b.record_ok("yolo", "yolo11x", "yolo-r1", 0.05, 0.04)
    a.record_failed("yolo", "saturated")
    b.record_failed("yolo", "saturated")
    b.record_failed("yolo", "replica_failed")
    a.inflight["yolo"] = 3
    b.inflight["yolo"] = 1
    return sum_counters([a, b])


def test_request_latency_is_a_histogram_in_seconds_with_counters_by_kind():
    fams, s = _parse(render_metrics(_serving(), AccountingSnapshot()))
    assert fams["clover_request_duration_seconds"].type == "histogram"
    assert fams["clover_slice_duration_seconds"].type == "histogram"
    n = lab(service="yolo", variant="yolo11n")
    bucket = lambda le: s[("clover_request_duration_seconds_bucket", tuple(sorted((*n, ("le", le)))))]
    assert bucket("0.0064") == 1 and bucket("0.0256") == 2 and bucket("0.0363") == 3 and bucket("0.205") == 4
    assert bucket("+Inf") == 4 == s[("clover_request_duration_seconds_count", n)]
    assert s[("clover_request_duration_seconds_sum", n)] == pytest.approx(0.255)
    counts = [bucket(repr(b)) for b in LATENCY_BUCKETS_S]
    assert counts == sorted(counts)  # cumulative
    r1 = lab(service="yolo", replica="yolo-r1")
    assert s[("clover_slice_duration_seconds_count", r1)] == 1
    assert s[("clover_slice_duration_seconds_sum", r1)] == pytest.approx(0.04)
    assert s[("clover_requests_total", lab(service="yolo", variant="yolo11n", replica="yolo-r0"))] == 4
    assert s[("clover_request_errors_total", lab(service="yolo", kind="saturated"))] == 2
    assert s[("clover_request_errors_total", lab(service="yolo", kind="replica_failed"))] == 1
    assert s[("clover_requests_in_flight", lab(service="yolo"))] == 4


def test_every_bucket_bound_is_exact_for_the_counters_log_buckets():
    for bound in LATENCY_BUCKETS_S:
        edge = max(e for e in map(bucket_upper_s, range(bucket_of(bound) + 1)) if e <= bound)
        assert bound / 1.01 <= edge <= bound  # the bound sits on (just above) a bucket edge
        below, above = LatencyHistogram(), LatencyHistogram()
        below.observe(edge * 0.999)
        above.observe(edge * 1.001)
        assert below.count_le(bound) == 1 and above.count_le(bound) == 0, bound


def _accounting() -> tuple[AccountingSnapshot, list]:
    acct = Accountant(load_services().get("yolo"), {"gpu0": "H100-80GB"}, PerformanceModel.default())
    slices = [SliceActivity("gpu0", "4g@0", 4, "yolo11x", 5.0), SliceActivity("gpu0", "3g@4", 3, "yolo11n", 5.0)]
    totals = AccountingTotals()
    accounts = [acct.record_interval(10.0, {"gpu0": 2000.0}, slices, {"yolo11x": 40, "yolo11n": 60}, 300.0, 1.5,
                                     p95_ms=33.0, host=HostEnergy(cpu_j=100.0, ram_j=10.0)) for _ in range(2)]
    for a in accounts:
        totals.observe_interval("yolo", a)
    totals.observe_carbon(CarbonReading(300.0, datetime.now(timezone.utc), "trace:emaps_de_2023", stale=True))
    totals.plan_applied("yolo", layout_changes={"gpu0": 1}, variant_swaps=2)
    totals.plan_applied("yolo", variant_swaps=1)
    totals.set_sla("yolo", 0.0362)
    totals.set_replicas({"yolo-r0": ReplicaPlacement("yolo", "gpu0", "4g@0", "yolo11x")})
    return totals.snapshot(), accounts


def test_accounting_counters_energy_carbon_baseline_intensity_and_changes():
    snap, accounts = _accounting()
    a = accounts[-1]
    fams, s = _parse(render_metrics(ServingCounters(), snap))
    sl = lambda **kw: lab(service="yolo", gpu="gpu0", **kw)
    e4 = s[("clover_energy_joules_total", sl(slice="4g@0", variant="yolo11x"))]
    e3 = s[("clover_energy_joules_total", sl(slice="3g@4", variant="yolo11n"))]
    assert e4 + e3 == pytest.approx(4000.0) and e4 == pytest.approx(2 * a.energy_by_slice["gpu0/4g@0"])
    assert s[("clover_carbon_grams_total", sl(slice="4g@0", variant="yolo11x"))] == \
        pytest.approx(2 * a.carbon_by_slice["gpu0/4g@0"])
    carbon = sum(v for (name, _), v in s.items() if name in ("clover_carbon_grams_total",
                                                             "clover_overhead_carbon_grams_total"))
    assert carbon == pytest.approx(sum(x.carbon_g for x in accounts))  # the dashboard's "carbon" sum is the total
    assert s[("clover_overhead_carbon_grams_total", lab(service="yolo", kind="host"))] == \
        pytest.approx(2 * a.host_carbon_g)
    assert s[("clover_host_energy_joules_total", lab(service="yolo", device="cpu"))] == 200.0
    assert s[("clover_baseline_carbon_grams_total", lab(service="yolo"))] == pytest.approx(2 * a.baseline_carbon_g)
    assert s[("clover_baseline_energy_joules_total", lab(service="yolo"))] == pytest.approx(2 * a.baseline_energy_j)
    assert s[("clover_carbon_intensity_gco2_per_kwh", lab(source="trace:emaps_de_2023"))] == 300.0
    assert s[("clover_carbon_intensity_stale", lab(source="trace:emaps_de_2023"))] == 1
    assert s[("clover_sla_seconds", lab(service="yolo"))] == pytest.approx(0.0362)
    assert s[("clover_accuracy_percent", lab(service="yolo"))] == pytest.approx((40 * 54.7 + 60 * 39.5) / 100)
    assert s[("clover_plan_changes_total", lab(service="yolo"))] == 2
    assert s[("clover_mig_layout_changes_total", lab(gpu="gpu0"))] == 1
    assert s[("clover_variant_swaps_total", lab(service="yolo"))] == 3
    assert s[("clover_replica_info", lab(replica="yolo-r0", service="yolo", gpu="gpu0", slice="4g@0",
                                         variant="yolo11x"))] == 1
    assert fams["clover_carbon_grams"].type == "counter" and fams["clover_carbon_intensity_gco2_per_kwh"].type == "gauge"


def test_names_follow_prometheus_conventions():
    snap, _ = _accounting()
    body = render_metrics(_serving(), snap).decode()
    fams, _ = _parse(body.encode())
    assert "_total_total" not in body and "_ms" not in body
    for name, fam in fams.items():
        assert name.startswith("clover_"), name
        if fam.type == "counter":
            assert all(smp.name == name + "_total" for smp in fam.samples), name
        if fam.type == "histogram":
            assert name.endswith("_seconds"), name


def test_renders_are_independent_and_never_touch_the_global_registry():
    one = ServingCounters()
    one.record_ok("albert", "base", "albert-r0", 0.1, 0.05)
    _, s1 = _parse(render_metrics(one, AccountingSnapshot()))
    _, s2 = _parse(render_metrics(ServingCounters(), AccountingSnapshot()))
    key = ("clover_requests_total", lab(service="albert", variant="base", replica="albert-r0"))
    assert s1[key] == 1 and key not in s2
    assert not [m for m in REGISTRY.collect() if m.name.startswith("clover_")]
