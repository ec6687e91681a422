"""Poisson arrival schedule and rate-trace parsing (pure logic, virtual time)."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from loadgen.arrivals import (
    RateTrace,
    load_rate_trace,
    parse_rate_trace,
    poisson_arrivals,
)
from loadgen.errors import LoadgenInputError


def test_constant_rate_is_poisson():
    rate, duration = 20.0, 2000.0
    times = list(poisson_arrivals(RateTrace.constant(rate), duration, random.Random(7)))
    expected = rate * duration
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)
    assert all(0 < t < duration for t in times) and times == sorted(times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert statistics.mean(gaps) == pytest.approx(1 / rate, rel=0.03)
    # exponential gaps: coefficient of variation 1 (a fixed-interval schedule would give 0)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, abs=0.05)


def test_piecewise_trace_follows_each_segment():
    trace = RateTrace((0.0, 100.0, 200.0), (10.0, 0.0, 40.0))
    times = list(poisson_arrivals(trace, 300.0, random.Random(3)))
    first = sum(t < 100 for t in times)
    silent = sum(100 <= t < 200 for t in times)
    last = sum(t >= 200 for t in times)
    assert silent == 0
    assert abs(first - 1000) < 4 * math.sqrt(1000)
    assert abs(last - 4000) < 4 * math.sqrt(4000)
    assert trace.mean_rate(300.0) == pytest.approx((1000 + 4000) / 300)
    assert trace.mean_rate(50.0) == pytest.approx(10.0)


def test_same_seed_same_schedule():
    trace = RateTrace.constant(5.0)
    a = list(poisson_arrivals(trace, 10.0, random.Random(1)))
    b = list(poisson_arrivals(trace, 10.0, random.Random(1)))
    c = list(poisson_arrivals(trace, 10.0, random.Random(2)))
    assert a == b and a != c


def test_parse_trace_ok_with_blank_lines():
    trace = parse_rate_trace("t_s,rate_rps\n0,5\n\n10, 2.5\n", "x.csv")
    assert trace.starts == (0.0, 10.0) and trace.rates == (5.0, 2.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,rate\n0,5\n", "x.csv: line 1: expected the header 't_s,rate_rps'"),
        ("", "x.csv: line 1: expected the header"),
        ("t_s,rate_rps\n0,5\n10,fast\n", "x.csv: line 3: t_s and rate_rps must be numbers"),
        ("t_s,rate_rps\n0,5\n10,-1\n", "x.csv: line 3: rate_rps must be a finite number >= 0"),
        ("t_s,rate_rps\n0,5\n10,1\n10,2\n", "x.csv: line 4: t_s=10.0 is not after the previous row's t_s=10.0"),
        ("t_s,rate_rps\n5,5\n", "x.csv: line 2: the first row must start at t_s=0"),
        ("t_s,rate_rps\n0,5,1\n", "x.csv: line 2: expected 2 columns"),
        ("t_s,rate_rps\n", "x.csv: no data rows"),
        ("t_s,rate_rps\n0,0\n", "x.csv: every rate_rps is 0"),
    ],
)
def test_parse_trace_errors_name_file_and_line(text, message):
    with pytest.raises(LoadgenInputError) as err:
        parse_rate_trace(text, "x.csv")
    assert message in str(err.value)


def test_load_missing_trace_file(tmp_path):
    with pytest.raises(LoadgenInputError, match="nope.csv: cannot read the rate trace"):
        load_rate_trace(tmp_path / "nope.csv")


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_constant_rate_must_be_positive(rate):
    with pytest.raises(LoadgenInputError, match="--rate must be a positive"):
        RateTrace.constant(rate)
