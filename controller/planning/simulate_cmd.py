"""`controller simulate`: replay a carbon trace through policies on the performance model.

Adapter only (arguments, table, JSON, plots); the simulation is controller/planning/replay.py.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from configs.cli import service_name

SPEC = re.compile(r"^\s*(\d+)\s*x\s*([A-Za-z0-9._-]+)\s*$")
DEFAULT_POLICIES = "base,clover-sa,ours"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, type=service_name,
                        help="service name from configs/services.yaml (yolo, efficientnet, albert)")
    parser.add_argument("--trace", required=True, help="bundled trace name (e.g. clover_ciso-march_49h) or a CSV path")
    parser.add_argument("--gpus", default="2xH100-80GB", help="GPUs, e.g. 2xH100-80GB,1xA100-40GB (default 2xH100-80GB)")
    parser.add_argument("--policy", default=DEFAULT_POLICIES,
                        help=f"comma-separated policies (default {DEFAULT_POLICIES}); known: base, ours, ours-myopic, "
                             "clover-sa, rand, oracle, energy-only")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.1, help="Clover's λ (default 0.1)")
    parser.add_argument("--rate", type=float, default=None, help="request rate, req/s (default: 50%% of Base's capacity)")
    parser.add_argument("--sla-ms", type=float, default=None, help="p95 SLA in ms (default: Base's predicted p95)")
    parser.add_argument("--hours", type=int, default=None, help="replay only the first N hours of the trace")
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


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from configs.loader import ConfigError, load_services
    from controller.carbon.trace import load_trace
    from controller.planning.model import PlanningProblem, base_p95_ms
    from controller.planning.planner import InfeasibleError
    from controller.planning.policies import POLICIES
    from controller.planning.replay import SimConfig, default_rate_rps, run_policies
    from models.performance import PerformanceModel

    console = Console()
    err = Console(stderr=True)
    try:
        service = load_services().get(args.service)
        trace = load_trace(args.trace)
        gpus = parse_gpus(args.gpus)
        names = [n.strip() for n in args.policy.split(",") if n.strip()]
        unknown = [n for n in names if n not in POLICIES]
        if unknown:
            raise KeyError(f"unknown policy {', '.join(unknown)}; known: {', '.join(POLICIES)}")
        batches = tuple(int(b) for b in args.batch_sizes.split(","))
        perf = PerformanceModel.default()
        rate = args.rate if args.rate is not None else default_rate_rps(service, gpus, perf)
        sla = args.sla_ms if args.sla_ms is not None else base_p95_ms(service, gpus, perf, rate)
        if sla == float("inf"):
            raise ValueError(f"Base cannot serve {rate:g} req/s on {args.gpus}: give --sla-ms or a lower --rate")
        values = list(trace.values[: args.hours] if args.hours else trace.values)
        problem = PlanningProblem(service, gpus, perf, rate, sla, lam=args.lam, batch_sizes=batches)
    except (KeyError, ValueError, ConfigError) as exc:
        err.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        return 2
    console.print(f"service {service.name}, {len(gpus)} GPU(s) {args.gpus}, trace {trace.name} ({len(values)} h), "
                  f"rate {rate:.1f} req/s{' (default: 50% of Base capacity)' if args.rate is None else ''}, "
                  f"SLA p95 {sla:.1f} ms{' (Base p95)' if args.sla_ms is None else ''}, λ={args.lam}")
    skipped: dict[str, str] = {}
    try:
        runs = run_policies(problem, values, names, SimConfig(window_s=args.window_s, seed=args.seed),
                            on_skip=lambda n, why: skipped.__setitem__(n, why))
    except InfeasibleError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    for n, why in skipped.items():
        err.print(f"[yellow]skipped {n}:[/yellow] {why}")

    cols = {"carbon_g": ("carbon g", "{:.1f}"), "carbon_saving_pct": ("saving %", "{:.2f}"),
            "accuracy": ("accuracy", "{:.3f}"), "accuracy_loss_pct": ("acc loss %", "{:.2f}"),
            "p50_ms": ("p50 ms", "{:.1f}"), "p95_ms": ("p95 ms", "{:.1f}"), "over_sla_pct": (">SLA %", "{:.2f}"),
            "reconfigurations": ("reconf", "{}"), "exploration_requests": ("explore req", "{}"),
            "objective": ("objective", "{:.4f}"), "solve_ms_p50": ("solve ms", "{:.1f}")}
    table = Table(title=f"{service.name} on {args.gpus}, {trace.name}, SLA {sla:.1f} ms")
    table.add_column("policy")
    for head, _ in cols.values():
        table.add_column(head, justify="right")
    for name, r in runs.items():
        table.add_row(name, *(fmt.format(r.summary[c]) for c, (_, fmt) in cols.items()))
    Console(width=max(console.width, 130)).print(table)
    keys = ["carbon_g", "carbon_saving_pct", "accuracy", "accuracy_loss_pct", "p50_ms", "p95_ms", "sla_ms", "over_sla_pct",
            "reconfigurations", "exploration_requests", "objective", "solve_ms_p50"]
    if args.json:
        out = {"service": service.name, "trace": trace.name, "gpus": args.gpus, "rate_rps": rate, "sla_ms": sla,
               "lambda": args.lam, "hours": len(values),
               "policies": {n: {k: r.summary[k] for k in keys} for n, r in runs.items()},
               "skipped": skipped}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        console.print(f"wrote {args.json}")
    if args.plot:
        from controller.planning.simulate_plot import plot_runs

        for path in plot_runs(args.plot, values, runs, plan_label):
            console.print(f"wrote {path}")
    return 0


