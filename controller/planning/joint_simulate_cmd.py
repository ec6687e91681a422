"""`controller simulate --service yolo,albert`: several services on one cluster (joint planning
against a static split of the GPUs), each at a constant rate or playing its own rate trace
(`--rate-trace yolo=azure_llm_2023_conv,albert=FILE`). Adapter only (arguments, loads, table,
JSON, plots); the replay is controller/planning/joint_replay.py, the plots joint_plot.py.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from configs.cli import UsageError
from configs.deployment import ServiceSpec
from controller.planning.joint_replay import JointRun, Row

if TYPE_CHECKING:
    import numpy as np

    from controller.carbon.trace import Trace
    from controller.planning.replay import SimConfig

DEFAULT_JOINT_POLICIES = "ours,static-split,clover-sa,base"
COLUMNS: dict[str, tuple[str, str]] = {
    "gpus": ("GPUs", "{:.0f}"), "carbon_g": ("carbon g", "{:.1f}"), "carbon_saving_pct": ("saving %", "{:.2f}"),
    "accuracy": ("accuracy", "{:.3f}"), "accuracy_loss_pct": ("acc loss %", "{:.2f}"),
    "over_sla_pct": (">SLA %", "{:.2f}"), "lost_requests": ("lost", "{:.0f}"),
    "reconfigurations": ("reconf", "{:.0f}"), "objective": ("objective", "{:.4f}"),
    "solve_ms_p50": ("solve ms", "{:.1f}"),
}


@dataclass(frozen=True)
class ServiceLoad:
    """What one service plays: its rate (constant, or its rate trace's busiest minute), whether
    the command line gave it, and the trace's expected rate per bin (None: constant)."""

    busiest_rps: float
    given: bool
    rate_trace: str | None = None
    load: np.ndarray | None = None

    @property
    def mean_rps(self) -> float:
        """The rate the service is planned and compared at (its SLA's default is Base's p95 there)."""
        return self.busiest_rps if self.load is None else float(self.load.mean())

    def json(self) -> dict[str, float | str | None]:
        return {"rate_rps": self.mean_rps, "rate_trace": self.rate_trace,
                "peak_rate_rps": self.busiest_rps if self.load is not None else None}


def rate_traces(text: str | None, served: Sequence[str], known: Sequence[str]) -> dict[str, tuple[str, str] | None]:
    """Each served service's rate trace and the token that named it (for errors), from
    `--rate-trace` as typed: one for every service or `NAME=TRACE,...` (configs/per_service.py's
    grammar: a malformed token, an unserved or unknown service or one named twice is a UsageError
    naming it); None for a service that keeps its constant rate."""
    from configs.per_service import parse_per_service

    if not text:
        return dict.fromkeys(served)
    per = parse_per_service("--rate-trace", text, served=served, known=known)
    return {n: None if per.value(n) is None else (per.value(n), per.where(n)) for n in served}


def service_loads(args: argparse.Namespace, specs: Sequence[ServiceSpec], rates: Sequence[float], trace: Trace,
                  steps: int, config: SimConfig, known: Sequence[str]) -> tuple[ServiceLoad, ...]:
    """Every service's load, built as one service's (`simulate_cmd.rate_load`): `rates` are the
    busiest minutes (or constant rates); `--diurnal` and `--time-scale` apply to every trace."""
    from controller.planning.simulate_cmd import rate_load
    from loadgen.errors import LoadgenInputError

    traces = rate_traces(args.rate_trace, [s.name for s in specs], known)
    out = []
    for spec, rate in zip(specs, rates):
        given = "rate_rps" in spec.model_fields_set
        named = traces[spec.name]
        if named is None:
            out.append(ServiceLoad(rate, given))
            continue
        try:
            load = rate_load(args, named[0], trace, rate, steps, config)
        except LoadgenInputError as exc:
            raise UsageError(f"{named[1]}: {exc}") from None
        out.append(ServiceLoad(rate, given, named[0], load))
    return tuple(out)


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
        loads = service_loads(args, specs, rates, trace, len(values), config, tuple(catalog.services))
        lams = tuple(DEFAULT_LAMBDA if s.lam is None else s.lam for s in specs)
        problems = build_problems(services, gpus, perf, tuple(sl.mean_rps for sl in loads),
                                  tuple(s.sla_ms for s in specs), lams, batches, ReconfigCost(step_s=args.step_s))
        runs = replay_joint(problems, values, names, config, tuple(sl.load for sl in loads))
    except (KeyError, ValueError, ConfigError, InfeasibleError) as exc:
        err.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        return 2
    split = runs["base"].services
    console.print(f"{len(specs)} services on {len(gpus)} GPU(s) {args.gpus}, trace {trace.name} ({len(values)} steps); "
                  + "; ".join(f"{p.service.name}: {_load_text(sl, args.diurnal)}, "
                              f"SLA {p.sla_ms:.1f} ms{' (Base p95)' if s.sla_ms is None else ''}, λ={p.lam}, "
                              f"static part {split[p.service.name]['gpus']:.0f} GPU(s)"
                              for s, p, sl in zip(specs, problems, loads)))
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
        out = {"services": {p.service.name: {**sl.json(), "sla_ms": p.sla_ms, "lambda": p.lam,
                                             "static_gpus": int(split[p.service.name]["gpus"])}
                            for p, sl in zip(problems, loads)},
               "trace": trace.name, "gpus": args.gpus, "hours": len(values), "step_s": args.step_s,
               "diurnal": args.diurnal if any(sl.load is not None for sl in loads) else None,
               "policies": {n: _json(r) for n, r in runs.items()}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        console.print(f"wrote {args.json}")
    if args.plot:
        from controller.planning.joint_plot import plot_joint
        from controller.planning.replay_load import step_means
        from mig.placement import gpu_type_of

        steps = len(values)
        rates = {p.service.name: [sl.mean_rps] * steps if sl.load is None else step_means(sl.load, steps)
                 for p, sl in zip(problems, loads)}
        for path in plot_joint(args.plot, values, runs, rates, sum(gpu_type_of(t).compute_slices for _, t in gpus)):
            console.print(f"wrote {path}")
    return 0


def _load_text(sl: ServiceLoad, diurnal: float | None) -> str:
    from controller.planning.simulate_cmd import load_text

    return load_text(sl.rate_trace, sl.mean_rps, sl.busiest_rps, diurnal, "" if sl.given else " (default)")


def _cells(row: Row) -> list[str]:
    return [fmt.format(row[c]) for c, (_, fmt) in COLUMNS.items()]


def _json(run: JointRun) -> dict[str, Row | dict[str, Row]]:
    return {"cluster": run.cluster, "services": run.services}
