"""What a controller does once as it starts: find the GPUs to plan for, and say in run.log what it
serves with and whether it resumes a desired plan (controller/loop/state.py).
"""
from __future__ import annotations

from controller.loop.ports import EventSink, Fleet
from controller.loop.settings import LoopSettings
from controller.loop.state import DesiredState


def log_start(events: EventSink, settings: LoopSettings, gpus: dict[str, str], carbon_source: str,
              desired: DesiredState | None) -> None:
    """The `start` event: what this controller serves with, and whether it resumes a desired plan."""
    resumed = desired is not None and desired.plan is not None
    device = settings.device.fields() if settings.device else {}
    events.event("start", f"controller for {settings.service}: λ={settings.lam}, SLA {settings.sla:.1f} ms, "
                          f"{len(gpus)} GPUs" + (f" ({device['device']}, meter {device['meter']})" if device else "")
                 + (f", resuming desired plan v{desired.version}" if resumed and desired else ""),
                 service=settings.service, lam=settings.lam, sla_ms=settings.sla,
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
