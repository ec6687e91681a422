"""Our policies: the exact MILP every step, for the load forecast, with or without the pay-back."""
from __future__ import annotations

from dataclasses import replace

from controller.planning.load_forecast import ForecastTrust, toward_persistence
from controller.planning.model import PlanningProblem, max_capacity_rps
from controller.planning.objective import REFERENCE_CI
from controller.planning.plan import Plan
from controller.planning.planner import solve
from controller.planning.policies.interface import HourContext, Policy

CAPACITY_MARGIN = 1e-3  # plan at most this far below the GPUs' whole SLA capacity (MILP tolerance)


class OursPolicy(Policy):
    """Exact plan each step for the rate the load forecast says to size for
    (controller/planning/load_forecast.py); a switch is made only where the receding-horizon
    pay-back over the carbon and rate forecast says it pays (planner._pay_back_choice).

    Where the forecasts have been wrong lately (ForecastTrust), they are blended toward
    persistence (nothing changes), under which the pay-back decides like `ours-myopic` with
    only the switching cost in the way."""

    name = "ours"
    load_aware = True
    pay_back = True

    def __init__(self) -> None:
        self.carbon_trust = ForecastTrust()
        self.rate_trust = ForecastTrust()
        self._hour = -1
        self._expected: tuple[float, float | None] | None = None  # (CI, mean rate) forecast for the next step

    def decide(self, ctx: HourContext) -> Plan:
        return solve(self.problem_for(ctx))

    def problem_for(self, ctx: HourContext) -> PlanningProblem:
        problem = ctx.problem
        rate, ahead, mean, now = problem.rate_rps, (), None, None
        if ctx.load is not None and self.load_aware:
            fc = ctx.load.forecast(len(ctx.forecast))
            cap = max_capacity_rps(problem) * (1.0 - CAPACITY_MARGIN)
            rate, ahead = min(fc.plan_rps, cap), tuple(min(r, cap) for r in fc.ahead_rps)
            mean, now = fc.mean_rps, fc.now_rps  # `now`: the traffic a switch made now meets
        problem = problem.with_(rate_rps=rate, mean_rate_rps=None if mean is None else min(mean, rate),
                                switch_rate_rps=now)
        if not self.pay_back:
            return problem.with_(forecast=(), reconfig=replace(problem.reconfig, horizon_h=0))
        if ctx.hour != self._hour:  # first decision of a step: score the last step's forecasts
            self._score(ctx)
            self._hour = ctx.hour
            self._expected = (ctx.forecast[0], mean) if ctx.forecast else None
        cis = toward_persistence(ctx.forecast, ctx.carbon_intensity, self.carbon_trust.weight)
        rates = toward_persistence(ahead, rate, self.rate_trust.weight)
        return problem.with_(forecast=cis, rate_forecast=rates)

    def _score(self, ctx: HourContext) -> None:
        if self._expected is None:
            return
        ci, mean = self._expected
        self.carbon_trust.record(ci, ctx.carbon_intensity)
        if mean is not None and ctx.load is not None:
            step = max(1, round(ctx.load.step_s / ctx.load.bin_s))
            self.rate_trust.record(mean, float(ctx.load.counts[-step:].sum()) / ctx.load.step_s)


class OursMyopicPolicy(OursPolicy):
    """Exact plan each step for the same load forecast, adopted whatever the reconfiguration costs."""

    name = "ours-myopic"
    pay_back = False


class OursMeanPolicy(OursPolicy):
    """The old behaviour: `ours` planning for the configured (mean) rate, as if it were constant,
    and never re-planned on a change of load."""

    name = "ours-mean"
    load_aware = False


class EnergyOnlyPolicy(Policy):
    """Carbon-blind energy minimiser: the exact planner with λ = 1 at a fixed reference
    intensity, i.e. minimum energy subject to the SLA with no accuracy term. Its plan does
    not depend on the carbon trace, so it never reconfigures at a constant rate."""

    name = "energy-only"

    def decide(self, ctx: HourContext) -> Plan:
        return solve(ctx.problem.with_(lam=1.0, carbon_intensity=REFERENCE_CI, current=None))
