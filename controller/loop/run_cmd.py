"""`controller --service yolo|efficientnet|albert …`: deploy the Serve app and run the control loop.

It connects to the Ray cluster (or starts a local one), finds the node agents that
`gpu-node setup --system` started, deploys the HTTP ingress, and re-plans every
`--replan-every` seconds until interrupted. Everything it does is written to
RUN_DIR/run.log (+ run.jsonl, emissions.csv).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

from configs.cli import service_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, type=service_name,
                        help="service to serve, from configs/services.yaml (yolo, efficientnet, albert)")
    parser.add_argument("--address", help="Ray cluster address HOST:PORT (default: start a local cluster)")
    parser.add_argument("--carbon-source", default="trace:emaps_us-cal-ciso_2023",
                        help="trace:NAME_OR_PATH, constant:G, electricitymaps:ZONE, watttime:REGION, uk[:REGION]")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.1, help="carbon weight λ in [0, 1] (default 0.1)")
    parser.add_argument("--sla-ms", type=float, default=None, help="p95 latency SLA (default: Base's p95)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="expected request rate (req/s): capacity is never planned below it (default 20)")
    parser.add_argument("--replan-every", type=float, default=300.0, help="seconds between re-plans (default 300)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="trace seconds per wall second for trace: sources (e.g. 720 = a day in 2 min)")
    parser.add_argument("--pue", type=float, default=1.5,
                        help="data-centre power usage effectiveness applied to all energy (default 1.5)")
    parser.add_argument("--execution", choices=("simulated", "real"), default="simulated",
                        help="simulated: service time/energy from the performance model; real: run the models")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants the planner may use (default: all of the service)")
    parser.add_argument("--run-dir", default="runs/controller", help="where run.log, run.jsonl, emissions.csv go")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the ingress (default 8000)")
    parser.add_argument("--simulate-node", action="store_true",
                        help="no --address: also start a simulated 2-GPU H100 node agent on this machine")


def known_service(name: str) -> Any:
    """The service config, or a ValueError listing the known services."""
    from configs import load_services

    try:
        return load_services().get(name)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


def allowed_variants(service: Any, spec: str | None) -> tuple[str, ...] | None:
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


def make_loop(args: argparse.Namespace, agents: dict[str, Any], ingress: Any, run_dir: Path) -> Any:
    """The control loop with its run log, carbon source and emissions.csv (shared with the demo)."""
    from controller.accounting.emissions_csv import EmissionsCsv
    from controller.accounting.runlog import RunLog
    from controller.carbon.spec import make_source
    from controller.loop.control_loop import ControlLoop, LoopSettings

    carbon = make_source(args.carbon_source, time_scale=args.time_scale)
    runlog = RunLog(run_dir, echo=getattr(args, "echo", True))
    settings = LoopSettings(args.service, args.lam, args.sla_ms, args.replan_every, args.rate, pue=args.pue,
                            execution=args.execution,
                            variants=allowed_variants(known_service(args.service), getattr(args, "variants", None)))
    loop = ControlLoop(settings, runlog=runlog, carbon=carbon, agents=agents, ingress=ingress)
    gpu_types = sorted({g.gpu_type for g in loop.gpus.values()})
    csv = EmissionsCsv(run_dir / "emissions.csv", run_id=run_dir.name, gpu_count=len(loop.gpus),
                       gpu_model=",".join(gpu_types), carbon_source=args.carbon_source)
    loop.on_interval = functools.partial(csv.append, service=args.service)
    return loop


def run(args: argparse.Namespace) -> int:
    from controller.serving.runtime import init_ray, shutdown, start_ingress
    from gpu_node.agent import AgentConfig, find_agents, start_agent

    try:
        known_service(args.service)
    except ValueError as exc:
        print(f"controller: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir)
    try:
        init_ray(args.address, local_nodes=("local",) if args.simulate_node and not args.address else ())
    except (ConnectionError, ValueError) as exc:
        print(f"controller: {exc}", file=sys.stderr)
        return 2
    try:
        agents = find_agents()
        if args.simulate_node and not args.address:  # keep the handle: it owns the (non-detached) agent
            agents["local"] = start_agent(AgentConfig("local", state_dir=str(run_dir / "node-state")),
                                          detached=False)
        if not agents:
            print("controller: no node agent in the cluster; run `gpu-node setup --system` on each GPU node "
                  "(or add --simulate-node for a simulated one here)", file=sys.stderr)
            return 2
        ingress = start_ingress(args.service, host=args.host, port=args.port,
                                api_token=os.environ.get("CLOVER_API_TOKEN"))
        loop = make_loop(args, agents, ingress, run_dir)
        print(f"serving {args.service} on http://{args.host}:{args.port}/v1/infer; run log in {run_dir}/run.log")
        try:
            loop.run()
        except KeyboardInterrupt:
            pass
        try:
            loop.finish()
        except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - Ctrl-C may have stopped Ray workers too
            loop.log.event("error", f"last interval not accounted: {exc!r}", where="shutdown", error=repr(exc))
        t = loop.accountant.totals()
        loop.log.event("end", "controller stopped", summary={
            "reconfigurations": loop.stats.reconfigurations, "mig_ops": loop.stats.mig_ops,
            "carbon_g": t.carbon_g, "baseline_carbon_g": t.baseline_carbon_g, "requests": t.requests,
            "failed": t.failed, "accuracy": t.accuracy})
        return 0
    finally:
        shutdown()
