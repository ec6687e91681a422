"""`controller simulate`: replay a carbon trace (and a load) through policies on the performance model.

Adapter only (arguments, table, JSON, plots); the simulation is controller/planning/replay.py,
the rate traces loadgen/arrivals.py.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from controller.carbon.trace import Trace
    from controller.planning.replay import SimConfig

SPEC = re.compile(r"^\s*(\d+)\s*x\s*([A-Za-z0-9._-]+)\s*$")
DEFAULT_POLICIES = "base,clover-sa,ours"
DEFAULT_LAMBDA = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True,
                        help="service name from configs/services.yaml (yolo, efficientnet, albert); several, "
                             "e.g. yolo,albert: planned jointly on the shared GPUs against a static split of them "
                             "(docs/planner.md, Several services)")
    parser.add_argument("--trace", required=True, help="bundled trace name (e.g. clover_ciso-march_49h) or a CSV path")
    parser.add_argument("--gpus", default="2xH100-80GB", help="GPUs, e.g. 2xH100-80GB,1xA100-40GB (default 2xH100-80GB)")
    parser.add_argument("--policy", default=DEFAULT_POLICIES,
                        help=f"comma-separated policies (default {DEFAULT_POLICIES}); known: base, ours, ours-myopic, "
                             "ours-mean, hindsight, clover-sa, rand, oracle, energy-only; several services: ours, ours-myopic (joint), "
                             "static-split, clover-sa, base (each on its static part; default ours,static-split,clover-sa,base)")
    parser.add_argument("--lambda", dest="lam", default=None,
                        help="Clover's λ in [0, 1] (default 0.1); several services: L or yolo=0.1,albert=0.3")
    parser.add_argument("--rate", default=None,
                        help="constant request rate, req/s (default: 50%% of Base's capacity); with --rate-trace, "
                             "the rate of its busiest minute; several services: R or yolo=40,albert=8 (default: 50%% "
                             "of Base's capacity on 1/n of the GPUs, n services)")
    parser.add_argument("--sla-ms", default=None,
                        help="p95 SLA in ms (default: Base's predicted p95 at the (mean) rate); several services: "
                             "MS or yolo=60,albert=40 (default: Base's p95 on the service's static part)")
    parser.add_argument("--hours", type=int, default=None, help="replay only the first N rows of the trace")
    load = parser.add_argument_group("time-varying load (docs/planner.md)")
    load.add_argument("--rate-trace", default=None, metavar="NAME|FILE",
                      help="request-rate trace: azure_llm_2023_conv, azure_llm_2023_code, or a CSV ('t_s,rate_rps' "
                           "rows or a TIMESTAMP column); it loops. Without it the rate is constant. Several services: "
                           "one for all, or efficientnet=azure_llm_2023_conv,albert=FILE (a service left out keeps "
                           "its constant rate)")
    load.add_argument("--time-scale", type=float, default=1.0, metavar="K",
                      help="stretch (K>1) or compress (K<1) the rate trace's time axis (default 1)")
    load.add_argument("--diurnal", type=float, default=None, metavar="K",
                      help="multiply the rate trace (every service's) by a daily envelope whose busiest moment is "
                           "K x its quietest")
    load.add_argument("--diurnal-peak-hour", type=float, default=14.0, metavar="H",
                      help="hour of day of the envelope's peak, on the carbon trace's clock (default 14)")
    load.add_argument("--step-s", type=float, default=3600.0, metavar="S",
                      help="simulated seconds per carbon-trace row (default 3600; e.g. 5 replays a day in 2 minutes)")
    load.add_argument("--stride", type=int, default=1, metavar="N", help="use every Nth row of the carbon trace")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random policies (rand, clover-sa) and of the simulated arrivals (default 0)")
    parser.add_argument("--window-s", type=float, default=60.0, help="simulated seconds per steady hour (default 60)")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="batch sizes the planner may use (default 1,2,4,8)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--plot", type=Path, default=None, help="write PNG plots to this directory")


def parse_gpus(spec: str) -> tuple[tuple[str, str], ...]:
    """`2xH100-80GB,1xA100-40GB` → ((gpu0, H100-80GB), (gpu1, H100-80GB), (gpu2, A100-40GB))."""
    from configs.loader import load_gpu_catalog

    catalog = load_gpu_catalog()
    gpus: list[tuple[str, str]] = []
    for part in spec.split(","):
        m = SPEC.match(part)
        if not m or int(m.group(1)) < 1:
            raise ValueError(f"--gpus: cannot read {part!r}: write COUNTxTYPE, e.g. 2xH100-80GB,1xA100-40GB")
        catalog.get(m.group(2))  # clear error for an unknown type
        gpus += [(f"gpu{len(gpus) + i}", m.group(2)) for i in range(int(m.group(1)))]
    return tuple(gpus)


def plan_label(plan) -> str:
    """`7g:yolo11x/b8 | idle`: one GPU per field, slices largest first."""
    parts = []
    for g in plan.gpus:
        reps = [f"{s.placement.profile.split('.')[0]}:{s.variant}/b{s.batch}" for s in g.slices if s.variant and s.share > 0]
        parts.append(" ".join(reps) or "idle")
    return " | ".join(parts)


def replay_inputs(args: argparse.Namespace) -> tuple[Trace, tuple[tuple[str, str], ...], tuple[int, ...], list[float], SimConfig]:
    """What one service's and several services' replays read alike: the trace and the rows
    replayed, the GPUs, the batch sizes, the replay settings."""
    from controller.carbon.trace import load_trace
    from controller.planning.replay_load import time_scaled_config

    trace = load_trace(args.trace)
    gpus = parse_gpus(args.gpus)
    batches = tuple(int(b) for b in args.batch_sizes.split(","))
    if args.step_s <= 0 or args.stride < 1 or args.time_scale <= 0:
        raise ValueError("--step-s and --time-scale must be positive and --stride at least 1")
    rows = trace.values[:: args.stride]
    values = list(rows[: args.hours] if args.hours else rows)
    config = time_scaled_config(args.time_scale, args.step_s, window_s=args.window_s, seed=args.seed)
    return trace, gpus, batches, values, config


def rate_load(args: argparse.Namespace, rate_trace: str | None, trace: Trace, busiest_rps: float, steps: int,
              config: SimConfig) -> np.ndarray | None:
    """The expected rate per bin a service plays: `rate_trace` (a bundled name or a CSV) with the
    flags' time scale and daily envelope, its busiest minute at `busiest_rps`; None without a
    trace (a constant rate). One service's and several services' replays build their loads alike.
    Raises LoadgenInputError for a trace that cannot be read."""
    from controller.planning.replay_load import traffic
    from loadgen.arrivals import load_rate_trace

    if not rate_trace:
        return None
    shape = load_rate_trace(rate_trace, time_scale=args.time_scale)
    return traffic(shape, trace.times[0], busiest_rps, steps, config, args.diurnal, args.diurnal_peak_hour,
                   args.stride, minute_s=60.0 * args.time_scale)


def load_text(rate_trace: str | None, mean_rps: float, busiest_rps: float, diurnal: float | None,
              default: str = "") -> str:
    """What a service plays, for the header line: `rate 12.0 req/s` or `load NAME (mean …, busiest
    minute …)`; `default` is appended to the rate when it was not given."""
    if not rate_trace:
        return f"rate {busiest_rps:.1f} req/s{default}"
    return (f"load {rate_trace} (mean {mean_rps:.1f} req/s, busiest minute {busiest_rps:.1f} req/s{default}"
            f"{', diurnal x' + format(diurnal, 'g') if diurnal else ''})")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from configs.deployment_flags import services_from_flags
    from configs.loader import ConfigError, load_services
    from controller.planning.model import PlanningProblem, ReconfigCost, base_p95_ms
    from controller.planning.planner import InfeasibleError
    from controller.planning.policies import POLICIES
    from controller.planning.policy_runs import run_policies
    from controller.planning.replay_load import default_rate_rps
    from loadgen.errors import LoadgenInputError
    from models.performance import PerformanceModel

    specs = services_from_flags(args.service, args.rate, args.sla_ms, args.lam)  # UsageError: exit 2
    if len(specs) > 1:
        from controller.planning.joint_simulate_cmd import run_joint

        return run_joint(args, specs)
    spec = specs[0]
    given_rate = spec.rate_rps if "rate_rps" in spec.model_fields_set else None
    lam = DEFAULT_LAMBDA if spec.lam is None else spec.lam
    console = Console()
    err = Console(stderr=True)
    try:
        service = load_services().get(spec.name)
        trace, gpus, batches, values, config = replay_inputs(args)
        names = [n.strip() for n in args.policy.split(",") if n.strip()]
        unknown = [n for n in names if n not in POLICIES]
        if unknown:
            raise KeyError(f"unknown policy {', '.join(unknown)}; known: {', '.join(POLICIES)}")
        perf = PerformanceModel.default()
        rate = given_rate if given_rate is not None else default_rate_rps(service, gpus, perf)
        load = rate_load(args, args.rate_trace, trace, rate, len(values), config)
        mean = rate if load is None else float(load.mean())
        sla = spec.sla_ms if spec.sla_ms is not None else base_p95_ms(service, gpus, perf, mean)
        if sla == float("inf"):
            raise ValueError(f"Base cannot serve {mean:g} req/s on {args.gpus}: give --sla-ms or a lower --rate")
        problem = PlanningProblem(service, gpus, perf, mean, sla, lam=lam, batch_sizes=batches,
                                  reconfig=ReconfigCost(step_s=args.step_s))
    except (KeyError, ValueError, ConfigError, LoadgenInputError) as exc:
        err.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        return 2
    what = load_text(args.rate_trace, mean, rate, args.diurnal,
                     " (default: 50% of Base capacity)" if given_rate is None and load is None else "")
    steps = f"{len(values)} h" if args.step_s == 3600 and args.stride == 1 else f"{len(values)} x {args.step_s:g} s"
    console.print(f"service {service.name}, {len(gpus)} GPU(s) {args.gpus}, trace {trace.name} ({steps}), {what}, "
                  f"SLA p95 {sla:.1f} ms{' (Base p95)' if spec.sla_ms is None else ''}, λ={lam}")
    skipped: dict[str, str] = {}
    try:
        runs = run_policies(problem, values, names, config, on_skip=lambda n, why: skipped.__setitem__(n, why),
                            load=load)
    except InfeasibleError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    for n, why in skipped.items():
        err.print(f"[yellow]skipped {n}:[/yellow] {why}")

    cols = {"carbon_g": ("carbon g", "{:.1f}"), "carbon_saving_pct": ("saving %", "{:.2f}"),
            "accuracy": ("accuracy", "{:.3f}"), "accuracy_loss_pct": ("acc loss %", "{:.2f}"),
            "p50_ms": ("p50 ms", "{:.1f}"), "p95_ms": ("p95 ms", "{:.1f}"), "over_sla_pct": (">SLA %", "{:.2f}"),
            "reconfigurations": ("reconf", "{}"), "layout_changes": ("MIG chg", "{}"), "swaps": ("swaps", "{}"),
            "lost_requests": ("lost", "{}"), "exploration_requests": ("explore req", "{}"),
            "objective": ("objective", "{:.4f}"), "solve_ms_p50": ("solve ms", "{:.1f}")}
    table = Table(title=f"{service.name} on {args.gpus}, {trace.name}, SLA {sla:.1f} ms")
    table.add_column("policy", no_wrap=True, min_width=11)
    for head, _ in cols.values():
        table.add_column(head, justify="right")
    for name, r in runs.items():
        table.add_row(name, *(fmt.format(r.summary[c]) for c, (_, fmt) in cols.items()))
    Console(width=max(console.width, 175)).print(table)
    keys = ["carbon_g", "carbon_saving_pct", "accuracy", "accuracy_loss_pct", "p50_ms", "p95_ms", "sla_ms", "over_sla_pct",
            "reconfigurations", "layout_changes", "mig_ops", "swaps", "lost_requests", "exploration_requests",
            "objective", "solve_ms_p50"]
    if args.json:
        out = {"service": service.name, "trace": trace.name, "gpus": args.gpus, "rate_rps": mean, "sla_ms": sla,
               "lambda": lam, "hours": len(values), "step_s": args.step_s, "rate_trace": args.rate_trace,
               "peak_rate_rps": rate if load is not None else None,
               "timeline": {n: [[t, plan_label(pl)] for t, pl in r.timeline] for n, r in runs.items()},
               "policies": {n: {k: r.summary[k] for k in keys} for n, r in runs.items()},
               "skipped": skipped}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        console.print(f"wrote {args.json}")
    if args.plot:
        from controller.planning.replay_load import step_means
        from controller.planning.simulate_plot import plot_runs

        step_rates = None if load is None else step_means(load, len(values))
        for path in plot_runs(args.plot, values, runs, plan_label, step_rates, args.step_s):
            console.print(f"wrote {path}")
    return 0
