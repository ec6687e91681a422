"""Clover's Base policy: the base variant on whole GPUs, never changes."""
from __future__ import annotations

from controller.planning.model import base_plan
from controller.planning.plan import Plan
from controller.planning.policies.interface import HourContext, Policy


class BasePolicy(Policy):
    """Clover's Base: the base variant on the whole GPU (7g) everywhere, never changes."""

    name = "base"

    def decide(self, ctx: HourContext) -> Plan:
        return base_plan(ctx.problem)
