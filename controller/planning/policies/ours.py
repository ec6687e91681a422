"""Our policies: the exact MILP every hour, with or without the reconfiguration pay-back."""
from __future__ import annotations

from controller.planning.objective import REFERENCE_CI
from controller.planning.plan import Plan
from controller.planning.planner import solve
from controller.planning.policies.interface import HourContext, Policy


class OursPolicy(Policy):
    """Exact plan each hour; switch only if the gain over the forecast horizon pays back the
    reconfiguration (the forecast is the trace's next hours: a perfect forecast)."""

    name = "ours"

    def decide(self, ctx: HourContext) -> Plan:
        return solve(ctx.problem)


class OursMyopicPolicy(Policy):
    """Exact plan each hour, adopted whatever the reconfiguration costs."""

    name = "ours-myopic"

    def decide(self, ctx: HourContext) -> Plan:
        return solve(ctx.problem.with_(forecast=()))


class EnergyOnlyPolicy(Policy):
    """Carbon-blind energy minimiser: the exact planner with λ = 1 at a fixed reference
    intensity, i.e. minimum energy subject to the SLA with no accuracy term. Its plan does
    not depend on the carbon trace, so it never reconfigures at a constant rate."""

    name = "energy-only"

    def decide(self, ctx: HourContext) -> Plan:
        return solve(ctx.problem.with_(lam=1.0, carbon_intensity=REFERENCE_CI, forecast=(), current=None))
