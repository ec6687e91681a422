"""The request rate to plan for, and when a change of load calls for a new plan.

Pure functions over measured arrival counts (no clocks, no I/O): the live loop and the replay
simulator feed them the requests counted per `bin_s` seconds and get back a `RateForecast`.
Rule (docs/planner.md, "Planning for the load that will come"):

1. Noise-free short-scale rate. Each bin's count is shrunk toward its block's mean (blocks of
   `block_s`, aligned on the newest bin) by w = 1 − 1/D, where D is the index of dispersion of
   the counts around their block means (variance / mean; 1 for a Poisson process). Poisson
   noise is what the queueing model already covers; what is left (w·deviation) is burstiness
   it does not: a Poisson-like stream is planned at its per-minute rates, an on/off stream at
   the rate of its bursts.
2. Burst rate = the request-weighted `quantile` of those per-bin rates over the recent window:
   the rate that all but 1 − quantile of the requests arrived at. The p95 SLA is a per-request
   quantile, so sizing the plan for what most requests see (not for the time average) is what
   keeps it through bursts.
3. Same-hour pattern: when the caller knows the same steps of the previous season (yesterday),
   the burst rate is multiplied by yesterday's ratio next-step / last-step (the expected trend).
4. Floor: never below the busiest block of the last `peak_window_s` (what the recent peak needs),
   so capacity is not given back while a surge is still under way.

Band rule (`replan_due`): a plan sized for rate S keeps serving while the planned rate stays in
[band_low·S, band_high·S]; above it the headroom is gone (re-plan now, before the p95 breaks),
below it capacity is idle (re-plan to save carbon). The gap between the two avoids flapping.

`ForecastTrust` and `toward_persistence` make the pay-back fall back toward myopic behaviour when
forecasts turn out wrong (docs/planner.md).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ForecastParams:
    """The rule's parameters (defaults tuned on the bundled Azure traces, bench/load_bench.py)."""

    quantile: float = 0.95  # request-weighted quantile of the short-scale rate to size for
    block_s: float = 60.0  # blocks whose mean a bin's count is shrunk toward
    peak_window_s: float = 600.0  # never plan below the busiest block of this recent window
    band_low: float = 0.6  # re-plan when the planned rate falls below band_low × the sized rate
    band_high: float = 1.0  # ... or rises above band_high × the sized rate

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")
        if not 0.0 < self.band_low < 1.0 <= self.band_high:
            raise ValueError(f"need 0 < band_low < 1 <= band_high, got {self.band_low}, {self.band_high}")
        if self.block_s <= 0 or self.peak_window_s <= 0:
            raise ValueError("block_s and peak_window_s must be positive")


@dataclass(frozen=True)
class RateForecast:
    """What the recent arrivals say about the next planning step (all rates in req/s)."""

    plan_rps: float  # size capacity for this: max(burst × trend, recent peak)
    mean_rps: float  # expected mean rate of the next step (recent mean × trend)
    burst_rps: float  # request-weighted quantile of the noise-free short-scale rate
    peak_rps: float  # busiest block of the last peak_window_s
    dispersion: float  # index of dispersion of the counts around their block means (1: Poisson)
    trend: float = 1.0  # yesterday's next-step / last-step ratio (1 when unknown)
    ahead_rps: tuple[float, ...] = ()  # planned rate of the steps after the next (same-hour pattern)
    now_rps: float | None = None  # mean rate of the newest block: the traffic a switch made now meets


def forecast(counts: Sequence[float], bin_s: float, params: ForecastParams = ForecastParams(),
             season: Sequence[float] = ()) -> RateForecast:
    """Forecast from `counts` (requests per `bin_s`, oldest first, e.g. the last hour).

    `season`: the previous season's mean rates for the last step and the coming ones
    (`season[0]` = the step that just ended, `season[k]` = k steps ahead), when known.
    """
    if bin_s <= 0 or len(counts) == 0:
        raise ValueError("need a positive bin width and at least one count")
    per_block = max(1, round(params.block_s / bin_s))
    n = len(counts)
    means = [0.0] * n
    for end in range(n, 0, -per_block):  # blocks aligned on the newest bin
        block = counts[max(0, end - per_block):end]
        m = sum(block) / len(block)
        means[max(0, end - per_block):end] = [m] * len(block)
    total = sum(counts)
    dispersion = sum((c - m) ** 2 for c, m in zip(counts, means)) / total if total > 0 else 1.0
    w = max(0.0, 1.0 - 1.0 / dispersion) if dispersion > 0 else 0.0
    rates = [max(0.0, m + w * (c - m)) / bin_s for c, m in zip(counts, means)]
    burst = weighted_quantile(rates, rates, params.quantile)
    recent = max(1, round(params.peak_window_s / bin_s))
    peak = max(means[-recent:]) / bin_s
    trends = [s / season[0] for s in season[1:]] if len(season) > 1 and season[0] > 0 else []
    trend = trends[0] if trends else 1.0
    mean = total / (n * bin_s)
    return RateForecast(plan_rps=max(burst * trend, peak), mean_rps=mean * trend, burst_rps=burst, peak_rps=peak,
                        dispersion=dispersion, trend=trend, ahead_rps=tuple(burst * t for t in trends[1:]),
                        now_rps=means[-1] / bin_s)


def weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The smallest value v with Σ weights of values ≤ v ≥ q · Σ weights (0 if no weight)."""
    pairs = sorted(zip(values, weights))
    total = sum(w for _, w in pairs)
    if total <= 0:
        return 0.0
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= q * total * (1 - 1e-12):
            return v
    return pairs[-1][0]


def band(sized_rps: float, params: ForecastParams = ForecastParams()) -> tuple[float, float]:
    """The planned rates a plan sized for `sized_rps` keeps serving."""
    return params.band_low * sized_rps, params.band_high * sized_rps


def replan_due(sized_rps: float, now: RateForecast, params: ForecastParams = ForecastParams()) -> str | None:
    """Why the current plan should be re-planned now, or None while the load stays in its band."""
    low, high = band(sized_rps, params)
    if now.plan_rps > high:
        return f"load above the band: plan for {now.plan_rps:.1f} req/s > {high:.1f} (sized for {sized_rps:.1f})"
    if now.plan_rps < low:
        return f"load below the band: plan for {now.plan_rps:.1f} req/s < {low:.1f} (sized for {sized_rps:.1f})"
    return None


@dataclass
class ForecastTrust:
    """How much the last forecasts can be believed: 1 − (mean relative error / tolerance), in [0, 1].

    The caller records each forecast against what then happened (carbon intensity of a step,
    mean rate of a step). A forecast that was off by `tolerance` on average earns weight 0.
    """

    tolerance: float = 0.5
    memory: int = 6
    errors: deque = field(default_factory=deque)

    def record(self, forecast_value: float, actual: float) -> None:
        err = abs(forecast_value - actual) / max(abs(actual), 1e-9)
        self.errors.append(min(err, 10.0))
        while len(self.errors) > self.memory:
            self.errors.popleft()

    @property
    def weight(self) -> float:
        if not self.errors:
            return 1.0
        return min(1.0, max(0.0, 1.0 - sum(self.errors) / len(self.errors) / self.tolerance))


def toward_persistence(forecast_values: Sequence[float], now: float, weight: float) -> tuple[float, ...]:
    """Blend each forecast value with today's (`now`): weight 1 keeps the forecast, 0 assumes that
    nothing changes (persistence, the assumption under which the pay-back decides like myopic
    with only the switching cost in the way)."""
    if not 0.0 <= weight <= 1.0 or not math.isfinite(now):
        raise ValueError(f"weight must be in [0, 1] and now finite, got {weight}, {now}")
    return tuple(now + weight * (f - now) for f in forecast_values)
