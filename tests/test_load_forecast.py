"""The rate to plan for (burst headroom, same-hour trend, recent-peak floor) and the band rule."""
import numpy as np
import pytest

from controller.planning.load_forecast import (
    ForecastParams,
    ForecastTrust,
    band,
    forecast,
    replan_due,
    toward_persistence,
    weighted_quantile,
)
from controller.planning.policies.interface import LoadHistory


def test_poisson_load_is_planned_near_its_rate():
    counts = np.random.default_rng(1).poisson(50.0, 3600).tolist()  # 1 s bins, one hour at 50 req/s
    fc = forecast(counts, 1.0)
    assert fc.dispersion == pytest.approx(1.0, abs=0.1)
    assert fc.mean_rps == pytest.approx(50.0, rel=0.02)
    # no burstiness beyond Poisson (the queueing model covers that): no headroom beyond the minute noise
    assert 50.0 <= fc.plan_rps < 56.0


def test_on_off_bursts_are_planned_at_the_burst_rate():
    rng = np.random.default_rng(2)
    on = (np.arange(3600) % 20) < 2  # 2 s bursts every 20 s
    counts = rng.poisson(np.where(on, 200.0, 2.0)).tolist()
    fc = forecast(counts, 1.0)
    mean = (0.1 * 200 + 0.9 * 2)
    assert fc.mean_rps == pytest.approx(mean, rel=0.05)
    assert fc.dispersion > 50
    # most requests arrive inside a burst: its rate (+ the Poisson spread of a second's count)
    assert 200.0 <= fc.burst_rps <= 200.0 + 3 * 200.0 ** 0.5
    assert fc.plan_rps >= fc.burst_rps > 8 * mean


def test_now_is_the_newest_block_not_the_hour():
    # an hour at 50 req/s whose last minute is idle: a switch made now meets no traffic
    counts = [50.0] * 3540 + [0.0] * 60
    fc = forecast(counts, 1.0)
    assert fc.now_rps == 0.0 and fc.mean_rps == pytest.approx(50.0 * 59 / 60)
    assert forecast([50.0] * 3600, 1.0).now_rps == pytest.approx(50.0)


def test_request_weighted_quantile():
    assert weighted_quantile([1.0, 10.0], [1.0, 1.0], 0.5) == 1.0
    assert weighted_quantile([1.0, 10.0], [1.0, 9.0], 0.5) == 10.0
    assert weighted_quantile([3.0, 1.0, 2.0], [1.0, 1.0, 1.0], 1.0) == 3.0
    assert weighted_quantile([1.0], [0.0], 0.9) == 0.0


def test_same_hour_pattern_scales_the_forecast_and_gives_the_steps_ahead():
    counts = [10.0] * 3600
    fc = forecast(counts, 1.0, season=(8.0, 12.0, 16.0, 4.0))  # yesterday: 8 → 12 → 16 → 4 req/s
    assert fc.trend == pytest.approx(1.5)
    assert fc.mean_rps == pytest.approx(15.0)
    assert fc.plan_rps == pytest.approx(15.0)
    assert fc.ahead_rps == pytest.approx((20.0, 5.0))


def test_never_below_the_recent_peak():
    counts = [10.0] * 3300 + [40.0] * 300  # a surge in the last 5 minutes
    fc = forecast(counts, 1.0, season=(20.0, 10.0))  # yesterday the load halved next
    assert fc.burst_rps * fc.trend < 40.0
    assert fc.peak_rps == pytest.approx(40.0)
    assert fc.plan_rps == pytest.approx(40.0)


def test_band_rule_replans_outside_and_keeps_inside():
    params = ForecastParams(band_low=0.6, band_high=1.0)
    assert band(100.0, params) == (60.0, 100.0)
    inside, above, below = (forecast([v] * 600, 1.0) for v in (80.0, 130.0, 40.0))
    assert replan_due(100.0, inside, params) is None
    assert "above the band" in replan_due(100.0, above, params)
    assert "below the band" in replan_due(100.0, below, params)


@pytest.mark.parametrize("kwargs", [dict(quantile=0.0), dict(band_low=1.0), dict(band_high=0.9), dict(block_s=0.0)])
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ForecastParams(**kwargs)


def test_trust_falls_with_forecast_error_and_blends_toward_persistence():
    trust = ForecastTrust(tolerance=0.5, memory=3)
    assert trust.weight == 1.0
    for f, a in ((110, 100), (90, 100), (100, 100)):
        trust.record(f, a)
    assert trust.weight == pytest.approx(1 - (0.1 + 0.1 + 0.0) / 3 / 0.5)
    for _ in range(3):
        trust.record(300, 100)  # off by 200 %: the older good ones are forgotten
    assert trust.weight == 0.0
    assert toward_persistence((300.0, 500.0), 100.0, 0.0) == (100.0, 100.0)
    assert toward_persistence((300.0, 500.0), 100.0, 0.5) == (200.0, 300.0)
    with pytest.raises(ValueError):
        toward_persistence((1.0,), 1.0, 1.5)


def test_load_history_uses_the_previous_day_for_the_trend():
    # 10 s steps, a "day" of 4 steps; yesterday's steps ran at 1, 2, 4, 8 req/s per bin
    day = np.repeat([1.0, 2.0, 4.0, 8.0], 10)
    counts = np.concatenate([day, day[:20]])  # now: two steps into today
    hist = LoadHistory(counts, 1.0, 10.0, 10.0, ForecastParams(block_s=5.0, peak_window_s=5.0), season_steps=4)
    fc = hist.forecast(horizon=2)
    assert fc.trend == pytest.approx(2.0)  # yesterday step 2 / step 1 = 4 / 2
    assert fc.mean_rps == pytest.approx(4.0)
    assert fc.ahead_rps == pytest.approx((8.0,))
    params = ForecastParams(block_s=5.0, peak_window_s=5.0)
    # no day yet: the last step against the one before (4 / 2), capped at x2; one step: no trend
    assert LoadHistory(counts[:30], 1.0, 10.0, 10.0, params, 4).forecast(2).trend == pytest.approx(2.0)
    assert LoadHistory(np.repeat([1.0, 8.0], 10), 1.0, 10.0, 10.0, params, 4).forecast(2).trend == 2.0
    assert LoadHistory(counts[:10], 1.0, 10.0, 10.0, params, 4).forecast(2).trend == 1.0
