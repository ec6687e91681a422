"""`controller demo`: the whole system on one machine, in about two minutes.

Starts a local Ray cluster, a simulated node with two H100-80GB GPUs (MIG on), the Serve app and
the control loop on an accelerated carbon clock (a day of a real grid trace over the demo's
duration), and offers Poisson load through the load generator. It ends with a table against
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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configs.cli import service_name
from controller.loop.real_execution import add_profile_arguments, check_profile_flags, prepare_real
from controller.loop.settings import RunDevice
from controller.planning.load_forecast import ForecastParams
from loadgen.arrivals import RateTrace, load_rate_trace
from loadgen.run_cmd import parse_duration

if TYPE_CHECKING:
    from controller.loop.control_loop import ControlLoop
    from loadgen.results import LoadResult

SUMMARY_KEYS = ("requests_sent", "requests_ok", "requests_failed", "reconfigurations", "mig_layout_changes",
                "variant_swaps", "carbon_g",
                "baseline_carbon_g", "carbon_saving_pct", "accuracy", "baseline_accuracy", "p95_ms", "sla_ms",
                "client_p95_ms", "device", "profile", "meter")
DEMO_NODE = "node0"
DEMO_TRACE_HOURS = 24.0
SIMULATED = RunDevice("2× H100-80GB (MIG), simulated", "bundled h100-sxm_*.json (performance model)",
                      "simulated (performance model)")
DEMO_RATE_TRACE = "azure_llm_2023_conv"
DEMO_PEAK_RPS = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", default="efficientnet", type=service_name,
                        help="efficientnet (default), yolo or albert")
    parser.add_argument("--duration", type=parse_duration, default=120.0, help="load duration: 120s, 2m, … (default 120s)")
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--rate", type=float, default=None,
                        help="offered load in requests/s: the busiest moment's rate with --rate-trace (default "
                             f"{DEMO_PEAK_RPS:g}), else constant (2 with --execution real)")
    parser.add_argument("--rate-trace", default=DEMO_RATE_TRACE, metavar="NAME|FILE|none",
                        help="request-rate trace played once over --duration, scaled so its busiest moment runs "
                             f"at --rate (default {DEMO_RATE_TRACE}: an hour of real Azure arrivals, CC-BY 4.0); "
                             "'none' for a constant rate (the default with --execution real)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants the planner may use (default: all; with --execution real "
                             "the two smallest, which run in real time on a laptop CPU)")
    parser.add_argument("--execution", choices=("simulated", "real"), default="simulated",
                        help="simulated: performance-model timing; real: run the small models on CPU")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.5, help="carbon weight λ (default 0.5)")
    parser.add_argument("--carbon-source", default="trace:clover_ciso-march_49h",
                        help="carbon source; a trace is replayed one day per --duration")
    parser.add_argument("--replan-every", type=float, default=10.0, help="seconds between re-plans (default 10)")
    parser.add_argument("--trace-hours", type=float, default=DEMO_TRACE_HOURS, metavar="H",
                        help=f"hours of the carbon trace replayed over --duration (default {DEMO_TRACE_HOURS:g}; "
                             "36 replays its low-high-low-high swing)")
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


def run_demo(service: str, duration_s: float, out: Path, *, rate: float | None = None, execution: str = "simulated",
             lam: float = 0.5, carbon_source: str = "trace:clover_ciso-march_49h", replan_every: float = 10.0,
             port: int = 0, echo: bool = True, variants: str | None = None, log_level: str = "info",
             profiles: Sequence[str] = (), profile_seconds: float | None = None,
             rate_trace: str = DEMO_RATE_TRACE, trace_hours: float = DEMO_TRACE_HOURS) -> dict[str, Any]:
    """Run the demo and return the summary (also written to out/summary.json).

    With `execution="real"` the replicas run the real networks on this machine's device; without
    a GPU the defaults drop to what a laptop CPU serves in real time: the service's two smallest
    variants at 2 req/s. The planner, the SLA and the energy then come from that device's profile
    (`profiles`, else measured here: `profile_seconds` per variant and batch) and meters.
    """
    from configs.logsetup import setup_logging
    from controller.loop.assemble import LoopSpec, allowed_variants, build_loop, known_service
    from controller.loop.interval import TrafficWindow
    from controller.loop.settings import LoopSettings
    from controller.serving.runtime import init_ray, shutdown, start_serving
    from gpu_node.agent import AgentConfig, start_agent
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
    if out.exists():
        for name in ("run.log", "run.jsonl", "emissions.csv", "summary.json", "node-state", "state"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    settings = LoopSettings(service, lam, None, replan_every, trace.mean_rate(duration_s), execution=execution,
                            variants=allowed_variants(svc, variants), reconcile_every_s=min(2.0, replan_every),
                            forecast=demo_forecast(duration_s))
    state_dir = str(out / "node-state")
    node = AgentConfig(DEMO_NODE, gpus=2, gpu_type="H100-80GB", state_dir=state_dir)
    device_profiles: tuple[str, ...] = ()
    if execution == "real":  # before Ray starts: a CPU is profiled with the machine to itself
        # the SLA holds at the busiest rate, not the mean the first plan is sized for
        real = prepare_real(svc, replace(settings, rate_rps=rate), DEMO_NODE, state_dir, profiles, profile_seconds,
                            echo=echo)
        node, device_profiles = real.device.agent, real.device.profiles
        settings = real.settings(settings)
    init_ray(local_nodes=(DEMO_NODE,))
    try:
        agent = start_agent(node, detached=False)  # keep the handle: it owns the (non-detached) agent
        bus = start_serving([service], port=port, ingress_replicas=settings.ingress_replicas)
        loop = build_loop(LoopSpec(settings, carbon_source, trace_hours * 3600.0 / duration_s, str(out), echo,
                                   profiles=device_profiles))
        setup_logging(log_level, runlog=loop.events)
        loop.start()  # first deployment, before any load
        first_steps = loop.stats.reconfigurations
        first_layouts, first_swaps = loop.rollout.layout_changes, loop.rollout.variant_swaps
        run_traffic = TrafficWindow(bus)
        worker = threading.Thread(target=loop.run, name="control-loop", daemon=True)
        worker.start()
        try:
            load = run_load_sync(f"http://127.0.0.1:{port}", service, trace, duration_s,
                                 load_payloads(svc.input, None, seed=1), seed=1)
        finally:
            loop.stop()
            worker.join()
        loop.finish()
        served, _ = run_traffic.take()
        summary = summarise(load, loop, loop.stats.reconfigurations - first_steps, served.p_ms(0.95) or 0.0,
                            loop.rollout.layout_changes - first_layouts, loop.rollout.variant_swaps - first_swaps)
        write_timeline(load, out / "timeline.csv", sla_ms=loop.settings.sla)
        loop.events.event("end", f"demo finished: {summary['carbon_saving_pct']:.1f}% carbon saved vs base, "
                                 f"{summary['requests_failed']} failed requests", summary=summary)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary
    finally:
        del agent
        shutdown()


def run(args: argparse.Namespace) -> int:
    try:
        summary = run_demo(args.service, args.duration, Path(args.out), rate=args.rate, execution=args.execution,
                           lam=args.lam, carbon_source=args.carbon_source, replan_every=args.replan_every,
                           port=args.port, variants=args.variants, log_level=args.log_level,
                           profiles=args.profiles or (), profile_seconds=args.profile_seconds,
                           rate_trace=args.rate_trace, trace_hours=args.trace_hours)
    except ValueError as exc:
        print(f"controller demo: {exc}", file=sys.stderr)
        return 2
    print_table(summary, args.service)
    print(f"wrote {Path(args.out) / 'summary.json'} and {Path(args.out) / 'run.log'}")
    return 0
