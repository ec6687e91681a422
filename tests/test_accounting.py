"""Per-slice attribution, carbon accounting and the base counterfactual (real performance model)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import load_services
from controller.accounting.attribution import (
    UNALLOCATED,
    UNALLOCATED_VARIANT,
    Accountant,
    SliceActivity,
    attribute_energy,
    carbon_g,
)
from models.performance import PerformanceModel

GPU = "H100-80GB"
PERF = PerformanceModel.default()
YOLO = load_services().get("yolo")


@st.composite
def gpu_intervals(draw):
    sizes = draw(st.lists(st.sampled_from([1, 2, 3, 4, 7]), max_size=7).filter(lambda s: sum(s) <= 7))
    slices = [(f"s{i}", c, draw(st.floats(0, 5000, allow_nan=False))) for i, c in enumerate(sizes)]
    return (draw(st.floats(0, 1e6, allow_nan=False)), draw(st.floats(0, 3600, allow_nan=False)), slices,
            draw(st.floats(0, 200, allow_nan=False)))


@settings(max_examples=300, deadline=None)
@given(gpu_intervals())
def test_shares_sum_to_the_measured_total(case):
    total, duration, slices, idle_w = case
    shares = attribute_energy(total, duration, slices, idle_w)
    assert math.fsum(shares.values()) == pytest.approx(total, rel=1e-12, abs=1e-9)
    assert all(v >= -1e-12 for v in shares.values())
    assert set(shares) == {s for s, _, _ in slices} | {UNALLOCATED}


def test_attribution_by_hand():
    # 10 s at 100 W idle, 1500 J measured: 1000 J idle, 500 J dynamic
    shares = attribute_energy(1500.0, 10.0, [("a", 3, 300.0), ("b", 1, 100.0), ("c", 2, 0.0)], 100.0)
    assert shares["a"] == pytest.approx(1000 * 3 / 7 + 375)
    assert shares["b"] == pytest.approx(1000 * 1 / 7 + 125)
    assert shares["c"] == pytest.approx(1000 * 2 / 7)
    assert shares[UNALLOCATED] == pytest.approx(1000 * 1 / 7)


def test_no_busy_time_spreads_the_excess_like_idle():
    shares = attribute_energy(1400.0, 10.0, [("a", 7, 0.0)], 100.0)
    assert shares == pytest.approx({"a": 1400.0, UNALLOCATED: 0.0})


def test_too_many_slices_is_an_error():
    with pytest.raises(ValueError, match="use 8 compute slices"):
        attribute_energy(1.0, 1.0, [("a", 4, 0), ("b", 4, 0)], 10.0)


def _acct(**kw) -> Accountant:
    return Accountant(YOLO, {"gpu0": GPU, "gpu1": GPU}, PERF, **kw)


SLICES = [
    SliceActivity("gpu0", "4g@0", 4, "yolo11x", busy_s=20.0),
    SliceActivity("gpu0", "3g@4", 3, "yolo11n", busy_s=30.0),
    SliceActivity("gpu1", "7g@0", 7, "yolo11m", busy_s=10.0, batch=4),
]


def test_interval_account_carbon_and_breakdowns():
    acct = _acct()
    a = acct.record_interval(60.0, {"gpu0": 9000.0, "gpu1": 6000.0}, SLICES,
                             {"yolo11x": 1000, "yolo11n": 2000, "yolo11m": 1000}, 250.0, 1.5, p95_ms=40.0)
    assert a.energy_j == 15000.0 and not a.estimated
    assert a.carbon_g == pytest.approx(15000 / 3.6e6 * 250 * 1.5)
    assert sum(a.energy_by_slice.values()) == pytest.approx(15000.0)
    assert sum(a.energy_by_variant.values()) == pytest.approx(15000.0)
    assert sum(a.carbon_by_slice.values()) == pytest.approx(a.carbon_g)
    assert a.energy_by_slice["gpu0/unallocated"] == 0.0  # 4g + 3g fill the GPU
    assert a.carbon_per_request_g["yolo11n"] == pytest.approx(a.carbon_by_variant["yolo11n"] / 2000)
    assert a.accuracy == pytest.approx((1000 * 54.7 + 2000 * 39.5 + 1000 * 51.5) / 4000)
    assert a.baseline_accuracy == 54.7


def test_baseline_is_base_on_7g_everywhere_from_the_same_model():
    acct = _acct()
    n, t = 4000, 60.0
    a = acct.record_interval(t, {"gpu0": 9000.0, "gpu1": 6000.0}, SLICES, {"yolo11n": n}, 250.0, 1.5)
    key, idle = "yolo:yolo11x", PERF.idle_power_w(GPU)
    busy = n / (2 * PERF.throughput_rps(key, GPU, 7, 1))
    expected = 2 * (idle * t + busy * PERF.busy_power_w(key, GPU, 7, 1))
    assert a.baseline_energy_j == pytest.approx(expected)
    assert a.baseline_carbon_g == pytest.approx(carbon_g(expected, 250.0, 1.5))
    # same requests, same interval, double the intensity: baseline doubles too (like for like)
    b = acct.record_interval(t, {"gpu0": 9000.0, "gpu1": 6000.0}, SLICES, {"yolo11n": n}, 500.0, 1.5)
    assert b.baseline_carbon_g == pytest.approx(2 * a.baseline_carbon_g)


def test_baseline_busy_time_is_capped_when_base_would_saturate():
    a = _acct().record_interval(1.0, {"gpu0": 1.0, "gpu1": 1.0}, [], {"yolo11n": 10**7}, 100.0, 1.0)
    key = "yolo:yolo11x"
    cap = 2 * (PERF.idle_power_w(GPU) + PERF.busy_power_w(key, GPU, 7, 1))
    assert a.baseline_energy_j == pytest.approx(cap)


def test_missing_measurement_is_estimated_from_the_model_and_flagged():
    a = _acct().record_interval(10.0, {"gpu0": 2000.0}, SLICES, {"yolo11m": 10}, 100.0, 1.5)
    dyn = 10.0 * PERF.busy_power_w("yolo:yolo11m", GPU, 7, 4)
    assert a.energy_by_gpu["gpu1"] == pytest.approx(PERF.idle_power_w(GPU) * 10 + dyn)
    assert a.estimated and "gpu1: no measurement" in a.notes[0]


def test_idle_gpu_energy_goes_to_unallocated():
    a = _acct().record_interval(10.0, {"gpu0": 9000.0, "gpu1": 750.0}, SLICES[:2], {}, 100.0, 1.5)
    assert a.energy_by_slice["gpu1/unallocated"] == 750.0
    assert a.energy_by_variant[UNALLOCATED_VARIANT] == 750.0
    assert a.accuracy is None


def test_embodied_carbon_is_charged_to_both_sides_and_totals_add_up():
    acct = _acct(embodied_g_per_gpu_hour=36.0)
    for _ in range(3):
        acct.record_interval(100.0, {"gpu0": 9000.0, "gpu1": 6000.0}, SLICES, {"yolo11x": 100, "yolo11n": 300},
                             200.0, 1.5, failed=1)
    a = acct.accounts[0]
    assert a.embodied_g == pytest.approx(2 * 36.0 * 100 / 3600)
    assert a.carbon_g == pytest.approx(carbon_g(15000.0, 200, 1.5) + a.embodied_g)
    t = acct.totals()
    assert t.intervals == 3 and t.requests == 1200 and t.failed == 3
    assert t.carbon_g == pytest.approx(3 * a.carbon_g)
    assert t.saved_g == pytest.approx(3 * a.saved_g)
    assert t.accuracy == pytest.approx((100 * 54.7 + 300 * 39.5) / 400)
    assert t.saved_pct == pytest.approx(100 * t.saved_g / t.baseline_carbon_g)


def test_bad_inputs_are_clear_errors():
    acct = _acct()
    with pytest.raises(ValueError, match="unknown GPU id"):
        acct.record_interval(1.0, {"gpu9": 1.0}, [], {}, 100.0, 1.5)
    with pytest.raises(KeyError, match="unknown variant"):
        acct.record_interval(1.0, {}, [SliceActivity("gpu0", "7g@0", 7, "yolo99", 1.0)], {}, 100.0, 1.5)
    with pytest.raises(ValueError, match="duration"):
        acct.record_interval(0.0, {}, [], {}, 100.0, 1.5)
