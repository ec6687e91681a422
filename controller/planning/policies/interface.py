"""What a policy is: it sees one step (an hour of the trace) at a time (`HourContext`) and
returns the plan to serve.

Live-trial policies call `ctx.trial(plan)`, which the replay simulator charges as exploration
(the requests of the trial are real simulated requests) and answers with a `TrialResult`.
Load-aware policies read the arrivals counted so far (`ctx.load`, a `LoadHistory`); the offline
`hindsight` policy is handed the whole future once (`prepare(TraceKnowledge)`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from configs.units import carbon_g
from controller.planning.load_forecast import ForecastParams, RateForecast, forecast
from controller.planning.model import PlanningProblem
from controller.planning.plan import Plan


@dataclass(frozen=True)
class TrialResult:
    """What a live trial measured (what Clover's search sees)."""

    energy_j: float
    requests: float
    accuracy: float
    p95_ms: float
    duration_s: float

    def carbon_per_request(self, ci: float, pue: float) -> float:
        return carbon_g(self.energy_j, ci, pue) / max(self.requests, 1e-9)


@dataclass(frozen=True)
class LoadHistory:
    """Requests counted per `bin_s` up to now (oldest first), as the live loop measures them."""

    counts: np.ndarray
    bin_s: float
    step_s: float  # length of a planning step (an hour of the trace)
    window_s: float  # how far back the forecast looks
    params: ForecastParams
    season_steps: int = 24  # steps per season (a day of hourly steps), for the same-hour pattern

    def forecast(self, horizon: int) -> RateForecast:
        """The rate forecast now. The trend comes from the same steps of the previous season
        (yesterday) when they are known for the step that just ended and the `horizon` steps
        ahead; before that from the last two steps (the step that ended against the one before,
        at most x2 either way), which is what a steady daily swing looks like an hour at a time."""
        bins = max(1, round(self.window_s / self.bin_s))
        step = max(1, round(self.step_s / self.bin_s))
        now = len(self.counts)
        back = self.season_steps * step
        season: list[float] = []
        if now - back - step >= 0:
            for k in range(-1, horizon):
                a = now - back + k * step
                if a + step > now:
                    break
                season.append(float(self.counts[a:a + step].sum()) / self.step_s)
        elif now >= 2 * step:
            last, before = float(self.counts[now - step:].sum()), float(self.counts[now - 2 * step:now - step].sum())
            if before > 0 and last > 0:
                season = [1.0, min(2.0, max(0.5, last / before))]
        return forecast(self.counts[-bins:].tolist(), self.bin_s, self.params, season)


@dataclass(frozen=True)
class TraceKnowledge:
    """The whole future of a replay (for `hindsight` only): carbon per step and the requests that
    will be counted per `bin_s` (what a load-aware policy sees only once they have happened)."""

    carbon: tuple[float, ...]
    counts: np.ndarray
    bin_s: float
    step_s: float
    params: ForecastParams


@dataclass
class HourContext:
    hour: int
    carbon_intensity: float
    forecast: tuple[float, ...]
    mean_carbon_intensity: float  # of the whole trace (Clover's re-plan threshold)
    problem: PlanningProblem  # configured rate, SLA, λ, CI, current plan
    deployed: Plan | None
    trial: Callable[[Plan], TrialResult]
    load: LoadHistory | None = None  # None: the rate is the configured constant


class Policy(ABC):
    name: str = ""
    make_before_break: bool = True  # unchanged replicas keep serving during a reconfiguration
    load_aware: bool = False  # re-planned within a step when the load leaves its plan's band

    def prepare(self, knowledge: TraceKnowledge) -> None:
        """Called once before the replay; only offline policies use it."""

    @abstractmethod
    def decide(self, ctx: HourContext) -> Plan:
        """The plan for this hour."""
