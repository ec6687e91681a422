"""Putting a control loop together for a real cluster: run log, carbon source, node fleet, Serve
replicas, control bus, desired-state file and emissions.csv. Shared by `controller run`, its
detached form and `controller demo`, so all three build exactly the same loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from configs import load_services
from configs.schema import Service
from controller.loop.control_loop import ControlLoop
from controller.loop.settings import LoopSettings


@dataclass(frozen=True)
class LoopSpec:
    """Everything `controller run` was asked for that the loop needs (picklable: it travels to
    the detached controller actor)."""

    settings: LoopSettings
    carbon_source: str
    time_scale: float
    run_dir: str
    echo: bool = True
    # Profile files of the device the replicas run on (real execution); () : the bundled H100 model.
    profiles: tuple[str, ...] = ()
    trace_start_h: float = 0.0  # hours into a trace: source the run starts at


def known_service(name: str) -> Service:
    """The service config, or a ValueError listing the known services."""
    try:
        return load_services().get(name)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


def allowed_variants(service: Service, spec: str | None) -> tuple[str, ...] | None:
    """`--variants b0,b1` checked against the service, or a ValueError naming the known ones."""
    if not spec:
        return None
    names = tuple(v.strip() for v in spec.split(",") if v.strip())
    known = [v.name for v in service.variants]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"--variants {spec!r}: {', '.join(unknown) or 'none given'} not variants of "
                         f"{service.name!r}; known: {', '.join(known)}")
    return names


def state_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "state" / "desired.json"


def build_loop(spec: LoopSpec, *, nodes: frozenset[str] | None = None) -> ControlLoop:
    """The loop on the cluster this process is connected to (`ray.init` first; the bus and the
    ingress must be up: controller/serving/runtime.start_serving)."""
    from controller.accounting.emissions_csv import EmissionsCsv
    from controller.accounting.runlog import RunLog
    from controller.carbon.spec import make_source
    from controller.loop.fleet import RayFleet
    from controller.loop.replicas import ServeReplicas
    from controller.loop.state import StateStore
    from controller.serving.control_bus import BusClient, bus_handle
    from models.performance import PerformanceModel

    run_dir = Path(spec.run_dir)
    perf = PerformanceModel.from_profiles(spec.profiles) if spec.profiles else None
    loop = ControlLoop(spec.settings, events=RunLog(run_dir, echo=spec.echo), perf=perf,
                       carbon=make_source(spec.carbon_source, time_scale=spec.time_scale,
                                         start_offset_h=spec.trace_start_h),
                       fleet=RayFleet(nodes), runtime=ServeReplicas(), bus=BusClient(bus_handle()),
                       store=StateStore(state_path(run_dir)))
    csv = EmissionsCsv(run_dir / "emissions.csv", run_id=run_dir.name, gpu_count=len(loop.gpus),
                       gpu_model=",".join(sorted(set(loop.gpus.values()))), carbon_source=spec.carbon_source)
    loop.accounting.on_interval = lambda account, service: csv.append(account, service=service)
    return loop
