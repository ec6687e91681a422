"""The rate the live loop plans for, from the requests the ingress replicas count.

A thin stateful wrapper around controller/planning/load_forecast.py (the rule and its parameters
are documented there and in docs/planner.md): every reconcile tick adds its offered requests
(served + turned away: saturation must not hide demand) to bins of `bin_s` of wall time; the
forecast's `plan_rps` — a high quantile of the noise-free short-scale rate, never below the
recent peak — is what the next plan is sized for, and the band rule says when the load has left
what the current plan was sized for, so the loop re-plans then and not only on its timer. An
overload re-plan may raise a floor under the planned rate for one peak window. Never below the
operator's `--rate`.
"""
from __future__ import annotations

import math
from collections import deque

from controller.planning.load_forecast import ForecastParams, RateForecast, forecast, replan_due


class LoadTracker:
    """The forecast's history as bins of `bin_s` seconds of wall time, however the ticks fall.

    Reconcile ticks are not evenly spaced: two may come a fraction of a second apart (a re-plan,
    an operator command), and one may come tens of seconds late (a make-before-break step holds
    the loop). A short tick's count taken as a whole bin turns Poisson noise into a burst (one
    request in 50 ms reads as 20 req/s at a 2 s bin); a late tick taken as one bin leaves the
    window's older bins in, so the peak window outlasts its seconds. So ticks are pooled until
    they make a whole bin, and a long one is spread evenly over the bins it spans."""

    def __init__(self, expected_rps: float, bin_s: float, params: ForecastParams = ForecastParams()) -> None:
        self.expected_rps = expected_rps
        self.bin_s = bin_s
        self.params = params
        self.window_bins = max(2, int(params.peak_window_s / bin_s) + 1)
        self._counts: deque[float] = deque(maxlen=self.window_bins)
        self._pending = (0.0, 0.0)  # (requests, seconds) of ticks not yet making a whole bin
        self._floor = 0.0
        self._floor_bins = 0  # bins the overload floor still holds

    def observe(self, requests: int, seconds: float) -> None:
        """One tick's offered requests over `seconds`."""
        if not (seconds > 0 and math.isfinite(seconds)):
            return
        pooled, span = self._pending[0] + requests, self._pending[1] + seconds
        bins = int(span / self.bin_s + 1e-9)
        if bins == 0:
            self._pending = (pooled, span)
            return
        rest = max(0.0, span - bins * self.bin_s)  # what is left over starts the next bin
        self._pending = (pooled * rest / span, rest)
        per_bin = pooled * self.bin_s / span
        for _ in range(min(bins, self.window_bins)):
            self._counts.append(per_bin)
        if self._floor_bins > 0:
            self._floor_bins = max(0, self._floor_bins - bins)
            if self._floor_bins == 0:
                self._floor = 0.0

    def forecast(self) -> RateForecast | None:
        return forecast(list(self._counts), self.bin_s, self.params) if self._counts else None

    def plan_rps(self) -> float:
        fc = self.forecast()
        return max(self.expected_rps, self._floor, fc.plan_rps if fc else 0.0)

    def replan_reason(self, sized_rps: float) -> str | None:
        """Why the plan sized for `sized_rps` no longer fits the load (None while in the band)."""
        fc = self.forecast()
        if fc is None or len(self._counts) * self.bin_s < self.params.block_s:
            return None  # not a block of history yet: the operator's rate stands
        planned = RateForecast(self.plan_rps(), fc.mean_rps, fc.burst_rps, fc.peak_rps, fc.dispersion)
        return replan_due(sized_rps, planned, self.params)

    def raise_floor(self, rate_rps: float) -> None:
        """After an overload: plan for at least this rate for one peak window."""
        self._floor = max(self._floor, rate_rps)
        self._floor_bins = self.window_bins
