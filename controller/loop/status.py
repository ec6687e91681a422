"""The controller's `/v1/status` document: the desired plan, the carbon and load it was made for,
the run's emissions so far, how much it has reconfigured and the capacity given back to Ray. Published through the control bus
with the Prometheus totals every reconcile tick (ControlLoop.publish_status).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from controller.loop.capacity import capacity_doc
from controller.serving.control_bus import JsonDoc

if TYPE_CHECKING:
    from controller.loop.control_loop import ControlLoop


def status_doc(loop: ControlLoop) -> JsonDoc:
    """What `GET /v1/status` shows."""
    t = loop.accountant.totals()
    return {"service": loop.settings.service, "plan": loop.plan.to_json() if loop.plan else None,
            "desired_version": loop.desired.version if loop.desired else None,
            "carbon_intensity": loop.carbon_now, "rate_rps": loop.rate_rps, "sla_ms": loop.settings.sla,
            "planning_sla_ms": loop.planning_slas()[loop.settings.service],
            "lambda": loop.settings.lam, "gpus": sorted(loop.gpus),
            "emissions": {"carbon_g": t.carbon_g, "baseline_carbon_g": t.baseline_carbon_g,
                          "saved_pct": t.saved_pct, "energy_j": t.energy_j, "requests": t.requests,
                          "failed": t.failed, "accuracy": t.accuracy},
            "reconfigurations": loop.stats.reconfigurations, "mig_layout_changes": loop.rollout.layout_changes,
            "variant_swaps": loop.rollout.variant_swaps, "mig_ops": loop.rollout.mig_ops,
            "held_gpus": loop.held_gpus,
            "idle_split_gpus": _merge_clocks(loop),
            "free_capacity": capacity_doc(loop.capacity),
        **({"services": _services(loop)} if len(loop.workload.names) > 1 else {})}


def _merge_clocks(loop: ControlLoop) -> dict[str, float]:
    """Split idle GPUs that will be merged back -> since when they have waited (none when merging
    is off; a GPU held since the last plan is left out: it will not be merged while held)."""
    if not loop.desired or not loop.settings.merge_idle_after_s > 0:
        return {}
    return {g: t for g, t in loop.desired.idle_since.items() if g not in loop.held_gpus}


def _services(loop: ControlLoop) -> JsonDoc:
    """Per served service: its λ, SLA, planning SLA and the rate its part of the plan is sized for."""
    planning = loop.planning_slas()
    return {s.name: {"lambda": s.lam, "sla_ms": s.sla_ms, "planning_sla_ms": planning[s.name],
                     "rate_rps": loop.demand.rates[s.name], "min_accuracy": s.min_accuracy}
            for s in loop.settings.services}
