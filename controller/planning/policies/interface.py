"""What a policy is: it sees one hour at a time (`HourContext`) and returns the plan to serve.

Live-trial policies call `ctx.trial(plan)`, which the replay simulator charges as exploration
(the requests of the trial are real simulated requests) and answers with a `TrialResult`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from configs.units import carbon_g
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


@dataclass
class HourContext:
    hour: int
    carbon_intensity: float
    forecast: tuple[float, ...]
    mean_carbon_intensity: float  # of the whole trace (Clover's re-plan threshold)
    problem: PlanningProblem  # rate, SLA, λ, CI, current plan
    deployed: Plan | None
    trial: Callable[[Plan], TrialResult]



class Policy(ABC):
    name: str = ""
    make_before_break: bool = True  # unchanged replicas keep serving during a reconfiguration

    @abstractmethod
    def decide(self, ctx: HourContext) -> Plan:
        """The plan for this hour."""
