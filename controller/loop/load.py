"""The rate the live loop plans for, from the requests the ingress replicas count.

A thin stateful wrapper around controller/planning/load_forecast.py (the rule and its parameters
are documented there and in docs/planner.md): every reconcile tick adds one bin of offered
requests (served + turned away: saturation must not hide demand); the forecast's `plan_rps` —
a high quantile of the noise-free short-scale rate, never below the recent peak — is what the
next plan is sized for, and the band rule says when the load has left what the current plan was
sized for, so the loop re-plans then and not only on its timer. An overload re-plan may raise a
floor under the planned rate for one peak window. Never below the operator's `--rate`.
"""
from __future__ import annotations

from collections import deque

from controller.planning.load_forecast import ForecastParams, RateForecast, forecast, replan_due


class LoadTracker:
    def __init__(self, expected_rps: float, bin_s: float, params: ForecastParams = ForecastParams()) -> None:
        self.expected_rps = expected_rps
        self.bin_s = bin_s
        self.params = params
        self._counts: deque[float] = deque(maxlen=max(2, int(params.peak_window_s / bin_s) + 1))
        self._floor = 0.0
        self._floor_bins = 0  # bins the overload floor still holds

    def observe(self, requests: int, seconds: float) -> None:
        """One tick's offered requests over `seconds` (rescaled to one `bin_s` bin)."""
        if seconds <= 0:
            return
        self._counts.append(requests * self.bin_s / seconds)
        if self._floor_bins > 0:
            self._floor_bins -= 1
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
        self._floor_bins = self._counts.maxlen or 1
