"""Why the loop re-plans between intervals: the load left its band, or the slices are overloaded.

Both read the ingress counters through their own `TrafficWindow`, so they see every request once
whatever the accounting does. The load trigger feeds each reconcile tick's requests into the
`LoadTracker` (bins of wall time; the rate the next plan is sized for) and asks for a re-plan when that rate has left
the band the current plan was sized for. The overload trigger looks at `OVERLOAD_WINDOW_S` of
traffic at a time and asks for more capacity at once when the p95 on the slices exceeds the SLA
or the ingress turned a real share of the requests away, instead of waiting for the timer.
A plan pinned by the operator (`POST /v1/plan`) is left alone by both.

The same window also calibrates the planner: the p95 measured on the slices runs above the
queueing model's prediction by what the model does not see (the serving path's own scheduling,
a busy host CPU). Its moving estimate, `overhead_ms`, is taken off the SLA the planner plans for,
so that a plan predicted right at the SLA is not one that misses it in practice; without it an
overload re-plan could only find the same plan again.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controller.loop.interval import TrafficWindow
from controller.loop.load import LoadTracker
from controller.loop.ports import EventSink, RouteBus
from controller.planning.load_forecast import ForecastParams

OVERLOAD_MIN_REQUESTS = 20  # fewer requests than this in the check window say nothing about p95
OVERLOAD_WINDOW_S = 10.0  # the overload check looks at this much traffic at a time
OVERLOAD_SHED = 0.05  # requests turned away (503 saturated) above this share of the offered ones: overload
OVERLOAD_GROWTH = 1.25  # capacity asked for on overload: this × the offered rate
OVERHEAD_WEIGHT = 0.3  # weight of the latest window in the moving overhead estimate
MAX_OVERHEAD_SHARE = 0.5  # the planner always gets at least half the SLA
# The planning SLA moves in steps of this share of the SLA: every new value means computing each
# column's SLA capacity again (seconds), so a value that wobbles with every window must not reach it.
PLANNING_SLA_STEP = 0.05


@dataclass(frozen=True)
class Verdict:
    """The rate to plan for now, and why to re-plan before the next interval (None: no need)."""
    rate_rps: float
    reason: str | None


class ReplanTriggers:
    """The triggers of one service (`service`; None: all the traffic, when one service is served)."""

    def __init__(self, bus: RouteBus, events: EventSink, expected_rps: float, bin_s: float,
                 params: ForecastParams, clock: Callable[[], float] = time.monotonic, service: str | None = None,
                 sla_margin: float = 0.0) -> None:
        self.events = events
        # the share of the SLA always kept off the planning SLA, in whole steps (at least the margin)
        self._min_steps = math.ceil(sla_margin / PLANNING_SLA_STEP - 1e-9)
        self.service = service
        self.load = LoadTracker(expected_rps, bin_s, params)
        self._arrivals = TrafficWindow(bus, clock)
        self._overload = TrafficWindow(bus, clock)
        self.overhead_ms = 0.0  # measured p95 on the slices minus the plan's predicted p95 (moving)

    def planning_sla_ms(self, sla_ms: float) -> float:
        """The SLA the planner plans for: the operator's, less the measured serving overhead rounded
        up to a step of `PLANNING_SLA_STEP` × SLA (so the planner's cached columns are reused), and
        less at least the `sla_margin` kept for what is not measured yet (the first plans, a load
        rising toward a plan's edge)."""
        steps = max(self._min_steps, math.ceil(self.overhead_ms / (PLANNING_SLA_STEP * sla_ms) - 1e-9))
        return max(sla_ms * (1.0 - MAX_OVERHEAD_SHARE), sla_ms * (1.0 - steps * PLANNING_SLA_STEP))

    def reset(self) -> None:
        """Forget the traffic so far (the first plan is deployed; measuring starts now)."""
        self._arrivals.take()
        self._overload.take()

    def check(self, sized_rps: float | None, sla_ms: float, pinned: bool, predicted_p95_ms: float = 0.0) -> Verdict:
        """One reconcile tick: `sized_rps` is the rate the desired plan was sized for (None: no plan),
        `predicted_p95_ms` what the planner predicted for it (0: unknown, e.g. a forced plan)."""
        traffic, seconds = self._arrivals.take()
        self.load.observe(traffic.requests(self.service) + traffic.failures(self.service), seconds)
        rate, reason = self.load.plan_rps(), None
        if sized_rps is not None and not pinned:
            left = self.load.replan_reason(sized_rps)
            if left:
                self.events.event("load", (f"{self.service}: " if self.service else "") + left, rate_rps=rate,
                                  sized_rps=sized_rps)
                reason = "load"
        overload = self._check_overload(rate, sla_ms, pinned, predicted_p95_ms)
        if overload is not None:
            return Verdict(overload, "overload")
        return Verdict(rate, reason)

    def _check_overload(self, rate_rps: float, sla_ms: float, pinned: bool, predicted_p95_ms: float) -> float | None:
        """The rate to re-plan for when the last window was overloaded, else None."""
        if self._overload.elapsed() < OVERLOAD_WINDOW_S:
            return None
        traffic, seconds = self._overload.take()
        p95 = traffic.p_ms(0.95, self.service)
        n = traffic.requests(self.service) + traffic.failures(self.service)
        if n < OVERLOAD_MIN_REQUESTS or p95 is None:
            return None
        if predicted_p95_ms > 0:
            gap = max(0.0, p95 - predicted_p95_ms)
            self.overhead_ms += OVERHEAD_WEIGHT * (gap - self.overhead_ms)
        if pinned:
            return None
        saturated = traffic.failures_by_kind(self.service).get("saturated", 0)
        if p95 <= sla_ms and saturated <= OVERLOAD_SHED * n:
            return None
        offered = n / seconds
        want = max(rate_rps, offered * OVERLOAD_GROWTH)
        self.events.event("overload", (f"{self.service}: " if self.service else "") + f"p95 on the slices {p95:.1f} ms vs SLA {sla_ms:.1f} ms, "
                                      f"{saturated} turned away at {offered:.1f} req/s: re-planning for "
                                      f"{want:.1f} req/s, p95 ≤ {self.planning_sla_ms(sla_ms):.1f} ms", p95_ms=p95,
                           offered_rps=offered, rate_rps=want, overhead_ms=self.overhead_ms)
        self.load.raise_floor(want)
        return want


class Demand:
    """Every served service's triggers and the rate its next plan is sized for.

    With one service its triggers read all the traffic (as they always have); with several, each
    reads its own service's. A re-plan is due when any service's load left its band, and at once
    when any is overloaded."""

    def __init__(self, bus: RouteBus, events: EventSink, expected: Mapping[str, float], sized: Mapping[str, float],
                 bin_s: float, params: ForecastParams, clock: Callable[[], float] = time.monotonic,
                 sla_margin: float = 0.0) -> None:
        several = len(expected) > 1
        self.triggers = {name: ReplanTriggers(bus, events, rate, bin_s, params, clock, name if several else None,
                                              sla_margin) for name, rate in expected.items()}
        self.rates = {name: max(rate, sized.get(name, 0.0)) for name, rate in expected.items()}

    def reset(self) -> None:
        for t in self.triggers.values():
            t.reset()

    def planning_sla_ms(self, service: str, sla_ms: float) -> float:
        return self.triggers[service].planning_sla_ms(sla_ms)

    def check(self, sized: Mapping[str, float] | None, slas: Mapping[str, float], pinned: bool,
              predicted_p95_ms: float) -> str | None:
        """One reconcile tick for every service: the rates follow, and why to re-plan now (None: no need)."""
        reasons = set()
        for name, t in self.triggers.items():
            verdict = t.check(None if sized is None else sized.get(name), slas[name], pinned, predicted_p95_ms)
            self.rates[name] = verdict.rate_rps
            if verdict.reason:
                reasons.add(verdict.reason)
        return "overload" if "overload" in reasons else next(iter(reasons), None)
