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


# ---- timestamp traces, scaling, diurnal envelope ----------------------------------------
def _poisson_times(rate, duration, seed):
    rng = random.Random(seed)
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return out
        out.append(t)


def test_timestamps_of_a_poisson_process_replay_at_their_minute_rates():
    # Poisson at 6 req/s: raw per-second counts are pure noise, so the estimate must not keep it
    text = "TIMESTAMP,ContextTokens\n" + "".join(f"{t:.4f},1\n" for t in _poisson_times(6.0, 600.0, 4))
    trace = parse_rate_trace(text, "p.csv")
    assert trace.period_s == pytest.approx(600.0, abs=1.0)
    assert trace.mean_rate(trace.period_s) == pytest.approx(6.0, rel=0.05)
    assert statistics.pstdev(trace.rates) < 0.6  # raw counts would have ≈ sqrt(6) ≈ 2.4


def test_on_off_timestamps_keep_their_bursts():
    # 40 req/s during the first 2 s of every 10 s, silent otherwise: the bursts are signal
    times = [t for t in _poisson_times(40.0, 600.0, 5) if t % 10.0 < 2.0]
    trace = parse_rate_trace("TIMESTAMP\n" + "".join(f"{t}\n" for t in times), "b.csv")
    on = [r for s, r in zip(trace.starts, trace.rates) if s % 10.0 < 2.0]
    off = [r for s, r in zip(trace.starts, trace.rates) if s % 10.0 >= 2.0]
    assert statistics.mean(on) == pytest.approx(40.0, rel=0.1)
    assert statistics.mean(off) < 2.0
    assert trace.mean_rate(540.0) == pytest.approx(8.0, rel=0.1)


def test_iso_timestamps_are_seconds_since_the_first_and_the_trace_loops():
    text = "TIMESTAMP\n2023-11-16 18:00:00.5\n2023-11-16 18:00:01.5\n2023-11-16T18:00:03.5Z\n"
    trace = parse_rate_trace(text, "iso.csv")
    assert trace.period_s == 3.0 and trace.mean_rate(3.0) == pytest.approx(1.0)
    # periodic: the pattern repeats, so 30 s hold ten times the requests of 3 s
    assert trace.mean_rate(30.0) == pytest.approx(1.0)
    assert [s for s, _, _ in trace.segments(7.0)] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TIMESTAMP\n2023-11-16 18:00:00\nyesterday\n", "t.csv: line 3: TIMESTAMP must be a date-time"),
        ("TIMESTAMP\n5\n3\n", "t.csv: line 3: TIMESTAMP 3 is before the previous row's; sort the file"),
        ("TIMESTAMP\n5\n", "t.csv: need at least two arrivals"),
        ("TIMESTAMP\nnan\n1\n", "t.csv: line 2: TIMESTAMP must be finite"),
        ("when,rate\n0,5\n", "t.csv: line 1: expected the header 't_s,rate_rps' (rate rows) or a first column 'TIMESTAMP'"),
    ],
)
def test_timestamp_trace_errors_name_file_and_line(text, message):
    with pytest.raises(LoadgenInputError) as err:
        parse_rate_trace(text, "t.csv")
    assert message in str(err.value)


def test_bundled_azure_traces_load_by_name_with_their_documented_shape():
    conv = load_rate_trace("azure_llm_2023_conv")
    code = load_rate_trace("azure_llm_2023_code")
    assert conv.mean_rate(conv.period_s) == pytest.approx(19366 / conv.period_s, rel=1e-3)
    assert code.mean_rate(code.period_s) == pytest.approx(8819 / code.period_s, rel=1e-3)
    # README: busiest minute 507 (conv) and 632 (code) requests; code is on/off within seconds
    assert conv.peak_rate(conv.period_s) == pytest.approx(507 / 60, rel=0.05)
    assert code.peak_rate(code.period_s) == pytest.approx(632 / 60, rel=0.25)
    assert max(code.rates) > 4 * code.peak_rate(code.period_s) > 4 * max(conv.rates) / 2


def test_unknown_rate_trace_name_lists_the_bundled_ones():
    with pytest.raises(LoadgenInputError, match="rate trace 'azure' not found.*azure_llm_2023_code, azure_llm_2023_conv"):
        load_rate_trace("azure")


def test_scaling_rate_and_time_are_independent():
    trace = RateTrace((0.0, 10.0), (2.0, 6.0), period_s=20.0)
    fast = trace.scaled(rate=3.0, time=0.5)
    assert fast.starts == (0.0, 5.0) and fast.rates == (6.0, 18.0) and fast.period_s == 10.0
    assert fast.mean_rate(10.0) == pytest.approx(3.0 * trace.mean_rate(20.0))
    with pytest.raises(LoadgenInputError, match="--rate-scale and --time-scale must be positive"):
        load_rate_trace("azure_llm_2023_conv", rate_scale=0.0)


def test_diurnal_envelope_has_mean_one_the_asked_swing_and_its_peak_where_asked():
    env = RateTrace.diurnal(3.0, peak_at_s=14 * 3600.0, step_s=600.0)
    assert env.mean_rate(86400.0) == pytest.approx(1.0)
    assert max(env.rates) / min(env.rates) == pytest.approx(3.0, rel=0.01)
    hourly = env.binned(3600.0, 86400.0)
    assert hourly.index(max(hourly)) in (13, 14) and hourly.index(min(hourly)) in (1, 2)
    assert env.binned(3600.0, 2 * 86400.0)[24:] == pytest.approx(hourly)  # it repeats daily
    with pytest.raises(ValueError, match="peak_to_trough must be >= 1"):
        RateTrace.diurnal(0.5)


def test_modulated_trace_is_the_pointwise_product():
    burst = RateTrace((0.0, 1.0), (10.0, 30.0), period_s=2.0)
    env = RateTrace((0.0, 3.0), (1.0, 2.0))
    prod = burst.modulated(env, 5.0)
    assert list(prod.segments(5.0)) == [(0.0, 1.0, 10.0), (1.0, 2.0, 30.0), (2.0, 3.0, 10.0),
                                        (3.0, 4.0, 60.0), (4.0, 5.0, 20.0)]
    assert prod.binned(2.0, 5.0) == pytest.approx([20.0, 35.0, 20.0])


def test_arrivals_follow_a_looping_trace():
    trace = RateTrace((0.0, 5.0), (0.0, 20.0), period_s=10.0)
    times = list(poisson_arrivals(trace, 100.0, random.Random(9)))
    assert all(t % 10.0 >= 5.0 for t in times)
    assert abs(len(times) - 1000) < 4 * math.sqrt(1000)
