"""Prometheus metrics: parse the text exposition the /metrics endpoint serves."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from configs import load_services
from controller.accounting.attribution import Accountant, SliceActivity
from controller.accounting.metrics import CloverMetrics
from controller.carbon.base import CarbonReading
from models.performance import PerformanceModel


def _samples(metrics: CloverMetrics) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exposition_carries_energy_carbon_intensity_accuracy_p95_and_plan_changes():
    acct = Accountant(load_services().get("yolo"), {"gpu0": "H100-80GB"}, PerformanceModel.default())
    slices = [SliceActivity("gpu0", "4g@0", 4, "yolo11x", 5.0), SliceActivity("gpu0", "3g@4", 3, "yolo11n", 5.0)]
    m = CloverMetrics("yolo")
    for _ in range(2):
        m.observe_interval(acct.record_interval(10.0, {"gpu0": 2000.0}, slices, {"yolo11x": 40, "yolo11n": 60},
                                                300.0, 1.5, p95_ms=33.0))
    m.observe_carbon(CarbonReading(300.0, datetime.now(timezone.utc), "trace:emaps_de_2023", stale=True))
    m.plan_changed()
    a = acct.accounts[-1]
    s = _samples(m)
    lab = lambda **kw: tuple(sorted({"service": "yolo", **kw}.items()))  # noqa: E731
    e4 = s[("clover_energy_joules_total", lab(gpu="gpu0", slice="4g@0", variant="yolo11x"))]
    e3 = s[("clover_energy_joules_total", lab(gpu="gpu0", slice="3g@4", variant="yolo11n"))]
    assert e4 + e3 == pytest.approx(4000.0)
    assert e4 == pytest.approx(2 * a.energy_by_slice["gpu0/4g@0"])
    assert s[("clover_carbon_grams_total", lab(gpu="gpu0", slice="4g@0", variant="yolo11x"))] == \
        pytest.approx(2 * a.carbon_by_slice["gpu0/4g@0"])
    assert s[("clover_baseline_carbon_grams_total", lab())] == pytest.approx(2 * a.baseline_carbon_g)
    assert s[("clover_requests_total", lab(variant="yolo11n"))] == 120
    assert s[("clover_plan_changes_total", lab())] == 1
    assert s[("clover_carbon_intensity_gco2_per_kwh", lab(source="trace:emaps_de_2023"))] == 300.0
    assert s[("clover_carbon_intensity_stale", lab(source="trace:emaps_de_2023"))] == 1
    assert s[("clover_accuracy", lab())] == pytest.approx((40 * 54.7 + 60 * 39.5) / 100)
    assert s[("clover_p95_latency_ms", lab())] == 33.0


def test_each_instance_has_its_own_registry():
    a, b = CloverMetrics("yolo"), CloverMetrics("yolo")
    a.plan_changed()
    assert "clover_plan_changes_total{service=\"yolo\"} 1.0" in a.render().decode()
    assert "clover_plan_changes_total{" not in b.render().decode()
