"""`controller simulate --service yolo,albert`: several services on one cluster (joint planning
against a static split of the GPUs). Adapter only (arguments, table, JSON); the replay is
controller/planning/joint_replay.py.
"""
from __future__ import annotations

import argparse
import json

from configs.cli import UsageError
from configs.deployment import ServiceSpec
from controller.planning.joint_replay import JointRun, Row

DEFAULT_JOINT_POLICIES = "ours,static-split,clover-sa,base"
SINGLE_ONLY = {"rate_trace": "--rate-trace", "plot": "--plot", "diurnal": "--diurnal"}  # not for several services yet
COLUMNS: dict[str, tuple[str, str]] = {
    "gpus": ("GPUs", "{:.0f}"), "carbon_g": ("carbon g", "{:.1f}"), "carbon_saving_pct": ("saving %", "{:.2f}"),
    "accuracy": ("accuracy", "{:.3f}"), "accuracy_loss_pct": ("acc loss %", "{:.2f}"),
    "over_sla_pct": (">SLA %", "{:.2f}"), "lost_requests": ("lost", "{:.0f}"),
    "reconfigurations": ("reconf", "{:.0f}"), "objective": ("objective", "{:.4f}"),
    "solve_ms_p50": ("solve ms", "{:.1f}"),
}


def run_joint(args: argparse.Namespace, specs: tuple[ServiceSpec, ...]) -> int:
    """Replay several services; 2 on input the replay cannot use (like one service's `run`)."""
    from rich.console import Console
    from rich.table import Table

    from configs.loader import ConfigError, load_services
    from controller.planning.joint_replay import (
        build_problems,
        default_joint_rate_rps,
        replay_joint,
    )
    from controller.planning.model import ReconfigCost
    from controller.planning.planner import InfeasibleError
    from controller.planning.simulate_cmd import DEFAULT_LAMBDA, DEFAULT_POLICIES, replay_inputs
    from models.performance import PerformanceModel

    typed = [flag for dest, flag in SINGLE_ONLY.items() if getattr(args, dest)]
    if typed:
        raise UsageError(f"{', '.join(typed)}: one service only for now; drop it or simulate one --service")
    policy_text = DEFAULT_JOINT_POLICIES if args.policy == DEFAULT_POLICIES else args.policy
    names = [n.strip() for n in policy_text.split(",") if n.strip()]
    console, err = Console(), Console(stderr=True)
    try:
        catalog = load_services()
        services = tuple(catalog.get(s.name) for s in specs)
        trace, gpus, batches, values, config = replay_inputs(args)
        perf = PerformanceModel.default()
        rates = tuple(s.rate_rps if "rate_rps" in s.model_fields_set
                      else default_joint_rate_rps(svc, gpus, perf, len(specs)) for s, svc in zip(specs, services))
        lams = tuple(DEFAULT_LAMBDA if s.lam is None else s.lam for s in specs)
        problems = build_problems(services, gpus, perf, rates, tuple(s.sla_ms for s in specs), lams, batches,
                                  ReconfigCost(step_s=args.step_s))
        runs = replay_joint(problems, values, names, config)
    except (KeyError, ValueError, ConfigError, InfeasibleError) as exc:
        err.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        return 2
    split = runs["base"].services
    console.print(f"{len(specs)} services on {len(gpus)} GPU(s) {args.gpus}, trace {trace.name} ({len(values)} steps); "
                  + "; ".join(f"{p.service.name}: {p.rate_rps:.1f} req/s{'' if 'rate_rps' in s.model_fields_set else ' (default)'}, "
                              f"SLA {p.sla_ms:.1f} ms{' (Base p95)' if s.sla_ms is None else ''}, λ={p.lam}, "
                              f"static part {split[p.service.name]['gpus']:.0f} GPU(s)"
                              for s, p in zip(specs, problems)))
    table = Table(title=f"{' + '.join(p.service.name for p in problems)} on {args.gpus}, {trace.name} "
                        f"(savings against Base on the static split)")
    table.add_column("policy / service", no_wrap=True, min_width=16)
    for head, _ in COLUMNS.values():
        table.add_column(head, justify="right")
    for name, r in runs.items():
        table.add_row(f"[bold]{name}[/bold]", *_cells(r.cluster), end_section=False)
        for svc, row in r.services.items():
            table.add_row(f"  {svc}", *_cells(row), end_section=svc == next(reversed(r.services)))
    Console(width=max(console.width, 150)).print(table)
    if "ours" in runs and "static-split" in runs:
        ratio = runs["ours"].cluster["carbon_g"] / runs["static-split"].cluster["carbon_g"]
        console.print(f"carbon(ours) / carbon(static-split) = {ratio:.3f}")
    if args.json:
        out = {"services": {p.service.name: {"rate_rps": p.rate_rps, "sla_ms": p.sla_ms, "lambda": p.lam,
                                             "static_gpus": int(split[p.service.name]["gpus"])} for p in problems},
               "trace": trace.name, "gpus": args.gpus, "hours": len(values), "step_s": args.step_s,
               "policies": {n: _json(r) for n, r in runs.items()}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        console.print(f"wrote {args.json}")
    return 0


def _cells(row: Row) -> list[str]:
    return [fmt.format(row[c]) for c, (_, fmt) in COLUMNS.items()]


def _json(run: JointRun) -> dict[str, Row | dict[str, Row]]:
    return {"cluster": run.cluster, "services": run.services}
