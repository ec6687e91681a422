"""Mergeable serving counters: quantiles within a bucket, intervals by subtraction, merges exact."""
import random

import numpy as np
import pytest

from controller.serving.counters import LatencyHistogram, ServingCounters, bucket_of, bucket_upper_s, sum_counters


def test_bucket_bounds_contain_the_value_within_the_relative_step():
    for x in (1e-5, 1e-4, 1.1e-4, 0.0123, 0.0362, 1.7, 42.0):
        b = bucket_of(x)
        assert x <= bucket_upper_s(b) * (1 + 1e-12)
        if b > 0:
            assert x > bucket_upper_s(b - 1) * (1 - 1e-12)
            assert bucket_upper_s(b) / bucket_upper_s(b - 1) == pytest.approx(2 ** (1 / 16))


def test_quantile_within_one_bucket_of_numpy():
    rng = random.Random(3)
    xs = [rng.lognormvariate(-3.5, 0.6) for _ in range(5000)]
    h = LatencyHistogram()
    for x in xs:
        h.observe(x)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(xs, q))
        assert exact <= h.quantile(q) <= exact * 2 ** (1 / 16) * 1.001


def test_interval_is_the_difference_of_two_cumulative_readings():
    c = ServingCounters()
    c.record_ok("yolo", "yolo11n", "r1", 0.020, 0.010)
    first = ServingCounters().merged(c)
    c.record_ok("yolo", "yolo11n", "r1", 0.030, 0.012)
    c.record_ok("yolo", "yolo11x", "r2", 0.050, 0.040)
    c.record_failed("yolo", "saturated")
    d = c.minus(first)
    assert d.requests() == 2 and d.by_variant("yolo") == {"yolo11n": 1, "yolo11x": 1}
    assert d.failures_by_kind() == {"saturated": 1}
    assert d.p_ms(1.0) == pytest.approx(40.0, rel=0.05)
    assert d.p_ms(1.0, on_slice=False) == pytest.approx(50.0, rel=0.05)


def test_merging_replicas_counts_every_request_once():
    a, b = ServingCounters(), ServingCounters()
    for _ in range(3):
        a.record_ok("albert", "base", "r1", 0.01, 0.005)
    b.record_ok("albert", "base", "r2", 0.01, 0.005)
    b.record_failed("yolo", "no_route")
    total = sum_counters([a, b])
    assert total.requests("albert") == 4 and total.failures("yolo") == 1 and total.requests("yolo") == 0
    assert total.p_ms(0.5, "nobody") is None
