"""Hindsight: the offline optimum with perfect knowledge of the whole carbon and load trace.

Not an online policy: it is handed the future (`prepare`) and is the limit the online ones are
measured against (`ours / hindsight` in every bench table). Each step is sized by the same rule
as `ours` (load_forecast.py) applied to the arrivals of that very step, known in advance instead
of forecast from the past, and capped at what the GPUs can serve.
The candidate plans are the exact optimum of every step; a dynamic programme over the steps
(switching.best_schedule) picks the sequence with the best total objective, reconfiguration
costs included, evaluating each plan with the energy of the batches that actually form. Limits:
candidates are the steps' optima (not every plan), and a switch is costed at the trace's mean
carbon intensity and rate.
"""
from __future__ import annotations

import numpy as np

from controller.planning.load_forecast import forecast
from controller.planning.model import PlanningProblem, max_capacity_rps, predict, reroute
from controller.planning.plan import Plan, plan_changed
from controller.planning.planner import solve_exact
from controller.planning.policies.interface import HourContext, Policy, TraceKnowledge
from controller.planning.policies.ours import CAPACITY_MARGIN
from controller.planning.switching import best_schedule, switch_cost


class HindsightPolicy(Policy):
    name = "hindsight"

    def __init__(self) -> None:
        self.knowledge: TraceKnowledge | None = None
        self.schedule: list[tuple[Plan, PlanningProblem]] | None = None

    def prepare(self, knowledge: TraceKnowledge) -> None:
        self.knowledge, self.schedule = knowledge, None

    def decide(self, ctx: HourContext) -> Plan:
        if self.knowledge is None:
            raise RuntimeError("hindsight needs the whole trace: the replay calls prepare() first")
        if self.schedule is None:
            self.schedule = plan_schedule(ctx.problem, self.knowledge)
        plan, step = self.schedule[ctx.hour]
        routed = reroute(plan, ctx.problem.with_(rate_rps=step.rate_rps, mean_rate_rps=step.mean_rate_rps))
        assert routed is not None  # the schedule only serves a plan where it can carry the rate
        return routed


def step_needs(problem: PlanningProblem, k: TraceKnowledge) -> list[tuple[float, float]]:
    """(rate to size for, mean rate) of each step, from its own arrivals."""
    per = max(1, round(k.step_s / k.bin_s))
    cap = max_capacity_rps(problem) * (1.0 - CAPACITY_MARGIN)
    out = []
    for h in range(len(k.carbon)):
        fc = forecast(k.counts[h * per:(h + 1) * per].tolist(), k.bin_s, k.params)
        need = min(fc.plan_rps, cap)
        out.append((need, min(fc.mean_rps, need)))
    return out


def plan_schedule(problem: PlanningProblem, k: TraceKnowledge) -> list[tuple[Plan, PlanningProblem]]:
    """(plan, the step it serves) per step: the best sequence over the whole trace."""
    needs = step_needs(problem, k)
    steps = [problem.with_(carbon_intensity=ci, rate_rps=r, mean_rate_rps=m, current=None, forecast=(), rate_forecast=())
             for ci, (r, m) in zip(k.carbon, needs)]
    candidates: list[Plan] = []
    for step in steps:
        best = solve_exact(step)
        if all(plan_changed(c, best) for c in candidates):
            candidates.append(best)
    hours = k.step_s / 3600.0
    values = []
    for step in steps:
        row = []
        for c in candidates:
            routed = reroute(c, step)
            row.append(-np.inf if routed is None else predict(routed, step, partial_batches=True).objective * hours)
        values.append(row)
    ref = problem.with_(carbon_intensity=float(np.mean(k.carbon)), rate_rps=float(np.mean([r for r, _ in needs])),
                        mean_rate_rps=float(np.mean([m for _, m in needs])), current=None)
    costs = [[0.0 if i == j else switch_cost(ref, a, b) for j, b in enumerate(candidates)]
             for i, a in enumerate(candidates)]
    path = best_schedule(values, costs, [0.0] * len(candidates))
    return [(candidates[j], step) for j, step in zip(path, steps)]
