"""What a controller does once as it starts: find the GPUs to plan for, and say in run.log what it
serves with and whether it resumes a desired plan (controller/loop/state.py).
"""
from __future__ import annotations

from collections.abc import Mapping

from configs.schema import Service
from controller.loop.ports import EventSink, Fleet
from controller.loop.settings import LoopSettings
from controller.loop.state import DesiredState
from controller.planning.joint import idle_shares
from controller.planning.model import PlanningProblem, base_p95_ms
from models.protocol import PerfModel


def log_start(events: EventSink, settings: LoopSettings, gpus: dict[str, str], carbon_source: str,
              desired: DesiredState | None) -> None:
    """The `start` event: what this controller serves with, and whether it resumes a desired plan."""
    resumed = desired is not None and desired.plan is not None
    device = settings.device.fields() if settings.device else {}
    served = ", ".join(f"{s.name} (λ={s.lam}, SLA {s.sla_ms or 0.0:.1f} ms)" for s in settings.more_services)
    events.event("start", f"controller for {settings.service}: λ={settings.lam}, SLA {settings.sla:.1f} ms, "
                          + (f"beside {served}, " if served else "")
                          + f"{len(gpus)} GPUs" + (f" ({device['device']}, meter {device['meter']})" if device else "")
                 + (f", resuming desired plan v{desired.version}" if resumed and desired else ""),
                 service=settings.service, lam=settings.lam, sla_ms=settings.sla,
                 services=[s.name for s in settings.services],
                 carbon_source=carbon_source, gpus=sorted(gpus.items()), resumed=resumed, **device)


def discover_gpus(fleet: Fleet, desired: DesiredState | None, events: EventSink) -> dict[str, str]:
    """GPUs to plan for (id → type): the MIG-enabled ones the agents report, plus those of the
    desired plan (a restarted controller keeps them while their agent is away)."""
    view = fleet.observe()
    gpus = {gid: g.handle.gpu_type for gid, g in view.gpus.items() if g.enabled}
    for gid, g in view.gpus.items():
        if not g.enabled:
            events.event("error", f"{gid}: MIG mode is off; run `gpu-node mig enable`; GPU not used",
                         where="discover", error="mig disabled")
    if desired is not None and desired.plan is not None:
        gpus.update({g.gpu_id: g.gpu_type for g in desired.plan.gpus})
    if not gpus:
        raise RuntimeError("no GPU to serve on: no node agent answered with a MIG-enabled GPU; run "
                           "`gpu-node setup --system` on each GPU node (and `gpu-node mig enable`)")
    return gpus


def fixed_slas(settings: LoopSettings, services: Mapping[str, Service], gpus: dict[str, str],
               perf: PerfModel) -> LoopSettings:
    """Each service's SLA, where the operator gave none: its Base's p95 at its expected rate (Clover's
    SLA). With several services a Base holds only its part of the GPUs (its share of the Bases'
    needs, controller/planning/joint.py), so its p95 is taken at its rate over that share."""
    cluster = sorted(gpus.items())
    probes = tuple(PlanningProblem(services[s.name], tuple(cluster), perf, s.rate_rps, 1.0)
                   for s in settings.services)
    shares = idle_shares(probes) if len(probes) > 1 else (1.0,)
    for s, share in zip(settings.services, shares):
        if s.sla_ms is None:
            sla = base_p95_ms(services[s.name], cluster, perf, s.rate_rps / share)
            settings = settings.with_service(s.name, sla_ms=sla)
    return settings
