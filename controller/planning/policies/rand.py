"""Rand (artifact baseline): random configurations with Clover's budget, live trials.

On each re-plan (same 5 % trigger as Clover) it evaluates the deployed configuration and up
to 10 new random ones (same MIG-graph space, live trials charged as exploration) and keeps
the best SLA-meeting one.
"""
from __future__ import annotations

from controller.planning.plan import Plan
from controller.planning.policies.clover_sa import (
    EXPLORE_LIMIT,
    LiveSearchPolicy,
    config_plan,
)
from controller.planning.policies.interface import HourContext


class RandPolicy(LiveSearchPolicy):
    name = "rand"

    def decide(self, ctx: HourContext) -> Plan:
        self._setup(ctx.problem)
        if not self.should_replan(ctx):
            return config_plan(ctx.problem, self.current)
        sla = ctx.problem.sla_ms
        best, best_score = None, -1000.0
        cfg, explored = self.current, 0
        for _ in range(10 * EXPLORE_LIMIT):
            score, p95, new = self.evaluate(ctx, cfg)
            explored += new
            if p95 <= sla and score > best_score:
                best, best_score = cfg, score
            if explored >= EXPLORE_LIMIT:
                break
            cfg = self.random_config()
        self.current = best or self.current
        return config_plan(ctx.problem, self.current)
