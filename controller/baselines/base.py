"""The policy interface of the replay simulator, and Clover's Base policy.

A policy sees one hour at a time (controller.replay.HourContext) and returns the plan to
serve with; live-trial policies call `ctx.trial(plan)`, which the simulator charges as
exploration (the requests of the trial are real simulated requests).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from controller.plan import Plan
from controller.planning_model import base_plan


class Policy(ABC):
    name: str = ""
    make_before_break: bool = True  # unchanged replicas keep serving during a reconfiguration

    @abstractmethod
    def decide(self, ctx) -> Plan:
        """The plan for this hour (ctx: controller.replay.HourContext)."""


class BasePolicy(Policy):
    """Clover's Base: the base variant on the whole GPU (7g) everywhere, never changes."""

    name = "base"

    def decide(self, ctx) -> Plan:
        return base_plan(ctx.problem)
