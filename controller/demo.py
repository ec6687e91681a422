"""`controller demo`: the whole system on one machine, in about two minutes.

Starts a local Ray cluster, a simulated node with two H100-80GB GPUs (MIG on), the Serve app and
the control loop on an accelerated carbon clock (22 hours of a real grid trace over the demo's
duration, a whole day with several services: `CarbonScenario`), and offers the load of a real,
time-compressed arrival trace through the load generator. It ends with a table against
`base` (the most accurate variant on whole GPUs) and writes OUT/summary.json, OUT/run.log,
OUT/run.jsonl and OUT/emissions.csv.

`--execution real` describes one machine instead: the replicas run the networks on the device
this machine has (gpu_node/real_device.py) — its CPU when there is no GPU, profiled at start-up
and cached — and the planner, the SLA and the energy all come from that device's profile and
meters. The summary names the device, profile and meter used.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from configs.cli import UsageError
from configs.loader import load_services
from controller.loop.real_execution import add_profile_arguments, check_profile_flags, prepare_real
from controller.loop.settings import RunDevice
from controller.planning.load_forecast import ForecastParams
from loadgen.arrivals import RateTrace, load_rate_trace
from loadgen.run_cmd import parse_duration

if TYPE_CHECKING:
    from controller.loop.assemble import LoopSpec
    from controller.loop.control_loop import ControlLoop
    from controller.loop.settings import LoopSettings
    from controller.serving.control_bus import BusClient
    from controller.serving.counters import ServingCounters
    from gpu_node.devices import AgentConfig
    from loadgen.results import LoadResult

L = TypeVar("L")

SUMMARY_KEYS = ("requests_sent", "requests_ok", "requests_failed", "reconfigurations", "mig_layout_changes",
                "variant_swaps", "carbon_g",
                "baseline_carbon_g", "carbon_saving_pct", "accuracy", "baseline_accuracy", "p95_ms", "sla_ms",
                "client_p95_ms", "device", "profile", "meter")
DEMO_NODE = "node0"


@dataclass(frozen=True)
class CarbonScenario:
    """The carbon side of a demo: λ, and which stretch of the carbon trace plays over the run."""

    lam: float
    trace_hours: float  # hours of the trace replayed over the run
    trace_start_h: float  # the trace's hour the run starts at


# One service: hours 13-35 of CISO in March (the trace's night at ~350 g/kWh, its solar day
# at ~100, its evening back above 250) under the controller's own λ 0.1, the load's peak in the
# solar day. The dirty hours run b4 on one GPU; the clean ones want the most accurate b7, and at
# the solar day's load (planned for 95 % of the SLA: DEMO_SLA_MARGIN) that takes more b7 replicas
# than there are GPUs, so a GPU is split into smaller slices; in the evening b4 on one GPU serves
# all again, and the split GPU, left idle, is merged back (docs/serving.md, The demo).
ONE_SERVICE = CarbonScenario(lam=0.1, trace_hours=22.0, trace_start_h=13.0)
# Several services: a whole day at λ 0.5, where both services hold their SLAs on a 2-core host.
SEVERAL_SERVICES = CarbonScenario(lam=0.5, trace_hours=24.0, trace_start_h=0.0)
SIMULATED = RunDevice("2× H100-80GB (MIG), simulated", "bundled h100-sxm_*.json (performance model)",
                      "simulated (performance model)")
DEMO_RATE_TRACE = "azure_llm_2023_conv"
DEMO_RATE_TRACES = (DEMO_RATE_TRACE, "azure_llm_2023_code")  # several services: one each, in turn
DEMO_PEAK_RPS = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", default="efficientnet", metavar="NAMES",
                        help="efficientnet (default), yolo or albert; or several sharing the GPUs, "
                             "e.g. efficientnet,albert (simulated execution)")
    parser.add_argument("--duration", type=parse_duration, default=120.0, help="load duration: 120s, 2m, … (default 120s)")
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--rate", default=None, metavar="R",
                        help="offered load in requests/s: the busiest moment's rate with --rate-trace (default "
                             f"{DEMO_PEAK_RPS:g}, split evenly between several services), else constant (2 with "
                             "--execution real); several services: R for each, or efficientnet=20,albert=10")
    parser.add_argument("--rate-trace", default=DEMO_RATE_TRACE, metavar="NAME|FILE|none",
                        help="request-rate trace played once over --duration, scaled so its busiest moment runs "
                             f"at --rate (default {DEMO_RATE_TRACE}: an hour of real Azure arrivals, CC-BY 4.0); "
                             "'none' for a constant rate (the default with --execution real)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants the planner may use (default: all; with --execution real "
                             "the two smallest, which run in real time on a laptop CPU)")
    parser.add_argument("--execution", choices=("simulated", "real"), default="simulated",
                        help="simulated: performance-model timing; real: run the small models on CPU")
    parser.add_argument("--lambda", dest="lam", type=float, default=None,
                        help=f"carbon weight λ (default {ONE_SERVICE.lam:g}; {SEVERAL_SERVICES.lam:g} for several "
                             "services)")
    parser.add_argument("--carbon-source", default="trace:clover_ciso-march_49h",
                        help="carbon source; a trace plays --trace-hours of itself, from --trace-start, over "
                             "--duration")
    parser.add_argument("--replan-every", type=float, default=10.0, help="seconds between re-plans (default 10)")
    parser.add_argument("--trace-hours", type=float, default=None, metavar="H",
                        help=f"hours of the carbon trace replayed over --duration (default {ONE_SERVICE.trace_hours:g}; "
                             f"{SEVERAL_SERVICES.trace_hours:g} for several services)")
    parser.add_argument("--trace-start", dest="trace_start_h", type=float, default=None, metavar="H",
                        help=f"hour of the carbon trace the run starts at (default {ONE_SERVICE.trace_start_h:g}; "
                             f"{SEVERAL_SERVICES.trace_start_h:g} for several services)")
    parser.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (default: a free one)")
    add_profile_arguments(parser)

def demo_trace(rate_rps: float, rate_trace: str, duration_s: float) -> RateTrace:
    """The demo's load: the trace played once over the run (its hour compressed into `duration_s`),
    scaled so that its busiest twentieth of the run offers `rate_rps`; or a constant rate."""
    if rate_trace == "none":
        return RateTrace.constant(rate_rps)
    trace = load_rate_trace(rate_trace)
    span = trace.period_s or trace.starts[-1] or duration_s
    return trace.scaled(time=duration_s / span).with_peak(rate_rps, duration_s, block_s=duration_s / 20)


def demo_forecast(duration_s: float) -> ForecastParams:
    """The load-forecast windows scaled like the demo's clock (a day of carbon, an hour of
    arrivals in `duration_s`): blocks of a twentieth of the run, the peak of a quarter of it."""
    return ForecastParams(block_s=duration_s / 20, peak_window_s=duration_s / 4)


# The demo plans for at most 95 % of its SLA from the first plan on. Without it, whether the solar
# day's first plan puts b7 on two whole GPUs right at the SLA's edge (then a load peak overloads
# them and a late split runs at the edge for ~40 s on a 2-core host) or splits a GPU while the load
# is moderate depended on whether the first 10 s window had measured any serving overhead yet.
DEMO_SLA_MARGIN = 0.05


def demo_merge_idle_after(duration_s: float) -> float:
    """How long a split GPU stays idle before it is merged back, scaled like the demo's clock: a
    twenty-fourth of the run (5 s of 120, about an hour of the carbon trace it replays), so the
    first re-plan after the evening's plans leave it idle merges it."""
    return duration_s / 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarise(load: LoadResult, loop: ControlLoop, reconfigurations: int, slice_p95_ms: float, layout_changes: int = 0,
              variant_swaps: int = 0) -> dict[str, Any]:
    """The demo's summary.json, exactly SUMMARY_KEYS.

    `p95_ms` is the p95 of the time requests spent on their MIG slice (batching, queue and
    service), which the planner predicts and the SLA bounds; `client_p95_ms` is what the load
    generator saw end to end, adding the HTTP and Ray Serve path (tens of ms on a 2-core box,
    the same for every plan). `device`, `profile` and `meter` say what the replicas ran on, what
    the planner predicted with and where the energy came from.
    """
    t = loop.accountant.totals()
    return {
        "requests_sent": load.sent,
        "requests_ok": load.ok,
        "requests_failed": load.failed,
        "reconfigurations": reconfigurations,
        "mig_layout_changes": layout_changes,
        "variant_swaps": variant_swaps,
        "carbon_g": round(t.carbon_g, 4),
        "baseline_carbon_g": round(t.baseline_carbon_g, 4),
        "carbon_saving_pct": round(t.saved_pct or 0.0, 2),
        "accuracy": round(t.accuracy or 0.0, 3),
        "baseline_accuracy": t.baseline_accuracy,
        "p95_ms": round(slice_p95_ms, 2),
        "sla_ms": round(loop.settings.sla, 2),
        "client_p95_ms": round(load.latency_ms.get("p95") or 0.0, 2),
        **(loop.settings.device or SIMULATED).fields(),
    }


def print_table(summary: dict[str, Any], service: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"controller demo: {service}, Clover vs base")
    t.add_column("")
    t.add_column("Clover", justify="right")
    t.add_column("base", justify="right")
    t.add_row("carbon (g CO2)", f"{summary['carbon_g']:.3f}", f"{summary['baseline_carbon_g']:.3f}")
    t.add_row("carbon saved", f"{summary['carbon_saving_pct']:.1f} %", "")
    t.add_row("accuracy", f"{summary['accuracy']:.2f}", f"{summary['baseline_accuracy']:.2f}")
    t.add_row("p95 on the slice (ms)", f"{summary['p95_ms']:.1f}", f"SLA {summary['sla_ms']:.1f}")
    t.add_row("p95 at the client (ms)", f"{summary['client_p95_ms']:.1f}", "+ HTTP/Serve path")
    t.add_row("requests ok / sent", f"{summary['requests_ok']} / {summary['requests_sent']}", "")
    t.add_row("failed requests", str(summary["requests_failed"]), "")
    t.add_row("MIG layout changes", str(summary["mig_layout_changes"]), "instances destroyed/created")
    t.add_row("variant swaps", str(summary["variant_swaps"]), "on unchanged slices")
    for key in ("device", "profile", "meter"):
        t.add_row(key, summary[key], "")
    Console().print(t)


def _fresh_out(out: Path) -> None:
    """An output folder without the files of an earlier demo (other files are left alone)."""
    if out.exists():
        for name in ("run.log", "run.jsonl", "emissions.csv", "summary.json", "node-state", "state"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def run_demo(service: str, duration_s: float, out: Path, *, rate: float | None = None, execution: str = "simulated",
             lam: float = ONE_SERVICE.lam, carbon_source: str = "trace:clover_ciso-march_49h",
             replan_every: float = 10.0,
             port: int = 0, echo: bool = True, variants: str | None = None, log_level: str = "info",
             profiles: Sequence[str] = (), profile_seconds: float | None = None,
             rate_trace: str = DEMO_RATE_TRACE, trace_hours: float = ONE_SERVICE.trace_hours,
             trace_start_h: float = ONE_SERVICE.trace_start_h) -> dict[str, Any]:
    """Run the demo and return the summary (also written to out/summary.json).

    With `execution="real"` the replicas run the real networks on this machine's device; without
    a GPU the defaults drop to what a laptop CPU serves in real time: the service's two smallest
    variants at 2 req/s. The planner, the SLA and the energy then come from that device's profile
    (`profiles`, else measured here: `profile_seconds` per variant and batch) and meters.
    """
    from controller.loop.assemble import LoopSpec, allowed_variants, known_service
    from controller.loop.settings import LoopSettings
    from gpu_node.devices import AgentConfig
    from loadgen.generator import run_load_sync
    from loadgen.payloads import load_payloads
    from loadgen.timeline import write_timeline

    svc = known_service(service)
    check_profile_flags(execution, profiles, profile_seconds)
    if execution == "real":
        variants = variants or ",".join(v.name for v in svc.variants[:2])
    if execution == "real" and rate_trace == DEMO_RATE_TRACE:
        rate_trace = "none"  # a laptop CPU serves a steady trickle, not bursts
    rate = rate if rate is not None else (2.0 if execution == "real" else DEMO_PEAK_RPS)
    trace = demo_trace(rate, rate_trace, duration_s)
    _fresh_out(out)
    port = port or free_port()
    settings = LoopSettings(service, lam, None, replan_every, trace.mean_rate(duration_s), execution=execution,
                            variants=allowed_variants(svc, variants), reconcile_every_s=min(2.0, replan_every),
                            forecast=demo_forecast(duration_s), merge_idle_after_s=demo_merge_idle_after(duration_s),
                            sla_margin=DEMO_SLA_MARGIN)
    state_dir = str(out / "node-state")
    node = AgentConfig(DEMO_NODE, gpus=2, gpu_type="H100-80GB", state_dir=state_dir)
    device_profiles: tuple[str, ...] = ()
    if execution == "real":  # before Ray starts: a CPU is profiled with the machine to itself
        # the SLA holds at the busiest rate, not the mean the first plan is sized for
        real = prepare_real(svc, replace(settings, rate_rps=rate), DEMO_NODE, state_dir, profiles, profile_seconds,
                            echo=echo)
        node, device_profiles = real.device.agent, real.device.profiles
        settings = real.settings(settings)
    with _cluster(settings, [service], node, LoopSpec(settings, carbon_source, trace_hours * 3600.0 / duration_s,
                                                      str(out), echo, profiles=device_profiles,
                                                      trace_start_h=trace_start_h), port,
                  log_level) as (loop, bus):
        run = _drive(loop, bus, lambda: run_load_sync(f"http://127.0.0.1:{port}", service, trace, duration_s,
                                                      load_payloads(svc.input, None, seed=1), seed=1))
        summary = summarise(run.load, loop, run.reconfigurations, run.served.p_ms(0.95) or 0.0, run.layout_changes,
                            run.variant_swaps)
        write_timeline(run.load, out / "timeline.csv", sla_ms=loop.settings.sla)
        return _finish(loop, out, summary)


def run_services_demo(services: Sequence[str], duration_s: float, out: Path, *,
                      rates: Mapping[str, float] | None = None, lam: float = SEVERAL_SERVICES.lam,
                      carbon_source: str = "trace:clover_ciso-march_49h", replan_every: float = 10.0,
                      port: int = 0, echo: bool = True, log_level: str = "info", rate_trace: str = DEMO_RATE_TRACE,
                      trace_hours: float = SEVERAL_SERVICES.trace_hours,
                      trace_start_h: float = SEVERAL_SERVICES.trace_start_h) -> dict[str, Any]:
    """Several services planned jointly on the demo's two simulated H100s (docs/planner.md,
    Several services): each offered its own load, every re-plan free to move slices between them.

    Each service's peak defaults to an equal part of the one-service demo's; with the default
    trace the services alternate between the two bundled Azure traces, so their loads move
    independently. The summary has one section per service (its slices' energy and carbon, its
    Base on its part of the cluster, its p95 against its SLA) and the whole cluster's totals, whose
    carbon also counts the capacity no service used (`unallocated_carbon_g`).
    """
    from controller.accounting.attribution import sum_accounts
    from controller.accounting.by_service import UNALLOCATED_SERVICE
    from controller.loop.assemble import LoopSpec, known_service
    from controller.loop.settings import LoopSettings, ServiceSettings
    from gpu_node.devices import AgentConfig
    from loadgen.generator import run_multi_load_sync
    from loadgen.payloads import load_payloads
    from loadgen.timeline import write_timelines

    catalog = {name: known_service(name) for name in services}
    peaks = {name: (rates or {}).get(name, DEMO_PEAK_RPS / len(services)) for name in services}
    names = DEMO_RATE_TRACES if rate_trace == DEMO_RATE_TRACE else (rate_trace,)
    traces = {name: demo_trace(peaks[name], names[i % len(names)], duration_s) for i, name in enumerate(services)}
    _fresh_out(out)
    port = port or free_port()
    first, *others = services
    settings = LoopSettings(first, lam, None, replan_every, traces[first].mean_rate(duration_s),
                            reconcile_every_s=min(2.0, replan_every), forecast=demo_forecast(duration_s),
                            merge_idle_after_s=demo_merge_idle_after(duration_s),
                            more_services=tuple(ServiceSettings(n, lam, None, traces[n].mean_rate(duration_s))
                                                for n in others))
    node = AgentConfig(DEMO_NODE, gpus=2, gpu_type="H100-80GB", state_dir=str(out / "node-state"))
    spec = LoopSpec(settings, carbon_source, trace_hours * 3600.0 / duration_s, str(out), echo,
                    trace_start_h=trace_start_h)
    with _cluster(settings, services, node, spec, port, log_level) as (loop, bus):
        payloads = {n: load_payloads(catalog[n].input, None, seed=1) for n in services}
        run = _drive(loop, bus, lambda: run_multi_load_sync(f"http://127.0.0.1:{port}", traces, duration_s,
                                                            payloads, seed=1))
        slas = loop.slas()
        per_service = {}
        for n in services:
            t = sum_accounts(loop.accounting.by_service.get(n, []), catalog[n].base.accuracy)
            load = run.load.services[n]
            per_service[n] = {
                "requests_sent": load.sent, "requests_ok": load.ok, "requests_failed": load.failed,
                "carbon_g": round(t.carbon_g, 4), "baseline_carbon_g": round(t.baseline_carbon_g, 4),
                "carbon_saving_pct": round(t.saved_pct or 0.0, 2), "accuracy": round(t.accuracy or 0.0, 3),
                "baseline_accuracy": t.baseline_accuracy, "p95_ms": round(run.served.p_ms(0.95, n) or 0.0, 2),
                "sla_ms": round(slas[n], 2), "client_p95_ms": round(load.latency_ms.get("p95") or 0.0, 2)}
        cluster = loop.accountant.totals()
        unallocated = sum_accounts(loop.accounting.by_service.get(UNALLOCATED_SERVICE, []), 0.0)
        summary = {
            "services": per_service,
            "requests_sent": run.load.total.sent, "requests_ok": run.load.total.ok,
            "requests_failed": run.load.total.failed, "reconfigurations": run.reconfigurations,
            "mig_layout_changes": run.layout_changes, "variant_swaps": run.variant_swaps,
            "carbon_g": round(cluster.carbon_g, 4), "baseline_carbon_g": round(cluster.baseline_carbon_g, 4),
            "carbon_saving_pct": round(cluster.saved_pct or 0.0, 2),
            "unallocated_carbon_g": round(unallocated.carbon_g, 4), **SIMULATED.fields()}
        write_timelines(run.load, out / "timeline.csv", sla_ms=slas)
        return _finish(loop, out, summary)


def print_services_table(summary: dict[str, Any]) -> None:
    """One column per service, then the whole cluster (capacity no service used included)."""
    from rich.console import Console
    from rich.table import Table

    services: dict[str, dict[str, Any]] = summary["services"]
    t = Table(title=f"controller demo: {', '.join(services)} sharing the GPUs, Clover vs base")
    t.add_column("")
    for name in (*services, "cluster"):
        t.add_column(name, justify="right")
    columns = [*services.values(), summary]

    def row(label: str, show: Callable[[dict[str, Any]], str], cluster: bool = True) -> None:
        t.add_row(label, *(show(c) if cluster or c is not summary else "" for c in columns))

    row("carbon (g CO2)", lambda c: f"{c['carbon_g']:.3f}")
    row("base (g CO2)", lambda c: f"{c['baseline_carbon_g']:.3f}")
    row("carbon saved", lambda c: f"{c['carbon_saving_pct']:.1f} %")
    row("accuracy / base", lambda c: f"{c['accuracy']:.2f} / {c['baseline_accuracy']:.2f}", cluster=False)
    row("p95 on slice / SLA (ms)", lambda c: f"{c['p95_ms']:.1f} / {c['sla_ms']:.1f}", cluster=False)
    row("requests ok / sent", lambda c: f"{c['requests_ok']} / {c['requests_sent']}")
    row("failed requests", lambda c: str(c["requests_failed"]))
    Console().print(t)
    print(f"unallocated capacity: {summary['unallocated_carbon_g']:.3f} g CO2 (in the cluster's carbon, no "
          f"service's); MIG layout changes {summary['mig_layout_changes']}, variant swaps {summary['variant_swaps']}")


@dataclass
class DemoRun(Generic[L]):
    """What one demo run left behind: the load generator's result and what the loop did under it."""

    load: L
    served: ServingCounters  # what the ingress saw during the load
    reconfigurations: int
    layout_changes: int
    variant_swaps: int


@contextmanager
def _cluster(settings: LoopSettings, services: Sequence[str], node: AgentConfig, spec: LoopSpec, port: int,
             log_level: str) -> Iterator[tuple[ControlLoop, BusClient]]:
    """A local Ray cluster with the demo node, the Serve app and a started control loop (first
    deployment made, before any load); torn down on exit."""
    from configs.logsetup import setup_logging
    from controller.loop.assemble import build_loop
    from controller.serving.runtime import init_ray, shutdown, start_serving
    from gpu_node.agent import start_agent
    from gpu_node.free_capacity import slice_units

    init_ray(local_nodes=(node.node,), slice_units=slice_units(node))
    try:
        agent = start_agent(node, detached=False)  # keep the handle: it owns the (non-detached) agent
        bus = start_serving(list(services), port=port, ingress_replicas=settings.ingress_replicas)
        loop = build_loop(spec)
        setup_logging(log_level, runlog=loop.events)
        loop.start()
        yield loop, bus
    finally:
        del agent
        shutdown()


def _drive(loop: ControlLoop, bus: BusClient, send: Callable[[], L]) -> DemoRun[L]:
    """Run the control loop in a thread while `send()` offers the load; count only what happened
    under load (the first deployment is not a re-partition)."""
    from controller.loop.interval import TrafficWindow

    first_steps = loop.stats.reconfigurations
    first_layouts, first_swaps = loop.rollout.layout_changes, loop.rollout.variant_swaps
    window = TrafficWindow(bus)
    worker = threading.Thread(target=loop.run, name="control-loop", daemon=True)
    worker.start()
    try:
        load = send()
    finally:
        loop.stop()
        worker.join()
    loop.finish()
    served, _ = window.take()
    return DemoRun(load, served, loop.stats.reconfigurations - first_steps,
                   loop.rollout.layout_changes - first_layouts, loop.rollout.variant_swaps - first_swaps)


def _finish(loop: ControlLoop, out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    loop.events.event("end", f"demo finished: {summary['carbon_saving_pct']:.1f}% carbon saved vs base, "
                             f"{summary['requests_failed']} failed requests", summary=summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _rates(services: Sequence[str], text: str | None) -> dict[str, float]:
    """`--rate` for several services: R for each, or NAME=R per service (the rest: the default)."""
    from configs.per_service import parse_per_service

    if text is None:
        return {}
    per = parse_per_service("--rate", text, served=tuple(services), known=services)
    return {name: rate for name in services if (rate := per.positive(name)) is not None}


def _with_defaults(given: CarbonScenario, default: CarbonScenario) -> CarbonScenario:
    """The flags given, the scenario's values for those left out."""
    return CarbonScenario(*(default_value if value is None else value
                            for value, default_value in zip(astuple(given), astuple(default))))


def run(args: argparse.Namespace) -> int:
    from configs.per_service import parse_service_list, positive_number

    out = Path(args.out)
    try:
        listed = parse_service_list(args.service, load_services().services)
        if any(v is not None for v in listed.values()):
            raise UsageError(f"--service {args.service!r}: give the demo's rates with --rate, e.g. "
                             "--rate efficientnet=20,albert=10")
        services = list(listed)
        given = CarbonScenario(args.lam, args.trace_hours, args.trace_start_h)
        scenario = _with_defaults(given, SEVERAL_SERVICES if len(services) > 1 else ONE_SERVICE)
        if len(services) > 1:
            if args.execution == "real":
                raise UsageError("--execution real serves one service (the device profile describes one); "
                                 f"got --service {args.service!r}")
            summary = run_services_demo(services, args.duration, out, rates=_rates(services, args.rate),
                                        lam=scenario.lam, carbon_source=args.carbon_source,
                                        replan_every=args.replan_every, port=args.port, log_level=args.log_level,
                                        rate_trace=args.rate_trace, trace_hours=scenario.trace_hours,
                                        trace_start_h=scenario.trace_start_h)
        else:
            rate = None if args.rate is None else positive_number(args.rate, f"--rate {args.rate!r}")
            summary = run_demo(services[0], args.duration, out, rate=rate, execution=args.execution,
                               lam=scenario.lam, carbon_source=args.carbon_source, replan_every=args.replan_every,
                               port=args.port, variants=args.variants, log_level=args.log_level,
                               profiles=args.profiles or (), profile_seconds=args.profile_seconds,
                               rate_trace=args.rate_trace, trace_hours=scenario.trace_hours,
                               trace_start_h=scenario.trace_start_h)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"controller demo: {exc}", file=sys.stderr)
        return 2
    if len(services) > 1:
        print_services_table(summary)
    else:
        print_table(summary, services[0])
    print(f"wrote {out / 'summary.json'} and {out / 'run.log'}")
    return 0
