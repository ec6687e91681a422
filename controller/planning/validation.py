"""Checking a plan that comes from outside (POST /v1/plan): JSON shape, MIG layouts, variants.

Pure: the ingress calls it before a forced plan reaches the controller, so a bad plan is refused
with a 422 naming the GPU and what is wrong, and never half-applied.
"""
from __future__ import annotations

from configs import load_services
from controller.planning.plan import Plan
from mig.errors import MigError
from mig.placement import validate_layout


class PlanError(ValueError):
    """A plan that cannot be served; the message says where and why."""


def validate_plan(doc: object, services: tuple[str, ...]) -> Plan:
    try:
        plan = Plan.from_json(doc)  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlanError(f"body must be a plan as GET /v1/status shows it: {exc!r}") from None
    if plan.service not in services:
        raise PlanError(f"plan is for service {plan.service!r}, this controller serves {list(services)}")
    service = load_services().get(plan.service)
    for g in plan.gpus:
        try:
            validate_layout(g.gpu_type, g.layout)
        except (MigError, KeyError) as exc:
            raise PlanError(f"{g.gpu_id}: invalid MIG layout: {exc}") from None
        for s in g.slices:
            if s.batch < 1:
                raise PlanError(f"{g.gpu_id}: batch must be >= 1, got {s.batch}")
            if s.variant is not None:
                try:
                    service.variant(s.variant)
                except KeyError as exc:
                    raise PlanError(f"{g.gpu_id}: {exc.args[0]}") from None
    return plan
