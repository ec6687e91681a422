"""`controller run --service yolo|efficientnet|albert …` (bare `controller --service …` too).

Connects to the Ray cluster (or starts a local one), makes sure the control bus and the HTTP
ingress run (keeping those that already do), and runs the control loop until SIGINT/SIGTERM —
or, with `--detach`, as a detached actor until `controller stop`. The same command after a
crash resumes: the desired plan is read from RUN_DIR/state/desired.json and what runs is
adopted, not restarted. Everything it does is written to RUN_DIR/run.log (+ run.jsonl,
emissions.csv).

On exit (`--on-exit`): `keep` (default) leaves the replicas, the ingress and the routing table
serving without a controller — the plan just stops following carbon and load until the next
`controller run`; `stop` deletes them. A local cluster this command started itself goes with it.

`--execution real` plans, judges and accounts with the device the replicas run on
(controller/loop/real_execution.py). On a local cluster that is this machine: its GPUs, else its
CPU, profiled before Ray starts and cached (the same cache as `controller demo`), and
`--simulate-node` starts this machine's own node agent instead of a simulated H100 node. With
`--address` the replicas run on the cluster's nodes, so `--profile` must give their device's
profile.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from configs.cli import service_name
from controller.loop.real_execution import add_profile_arguments, check_profile_flags, cluster_settings, prepare_real

if TYPE_CHECKING:
    from controller.loop.assemble import LoopSpec
    from gpu_node.devices import AgentConfig

LOCAL_NODE = "local"  # the node a local cluster's only machine acts as


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, type=service_name,
                        help="service to serve, from configs/services.yaml (yolo, efficientnet, albert)")
    parser.add_argument("--address", help="Ray cluster address HOST:PORT (default: start a local cluster)")
    parser.add_argument("--carbon-source", default="trace:emaps_us-cal-ciso_2023",
                        help="trace:NAME_OR_PATH, constant:G, electricitymaps:ZONE, watttime:REGION, uk[:REGION]")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.1, help="carbon weight λ in [0, 1] (default 0.1)")
    parser.add_argument("--sla-ms", type=float, default=None, help="p95 latency SLA (default: Base's p95 under the planner's profile: with "
                             "--execution real, that of the device the replicas run on)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="expected request rate (req/s): capacity is never planned below it (default 20)")
    parser.add_argument("--replan-every", type=float, default=300.0, help="seconds between re-plans (default 300)")
    parser.add_argument("--reconcile-every", type=float, default=2.0,
                        help="seconds between reconciliations of what runs with the plan (default 2)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="trace seconds per wall second for trace: sources (e.g. 720 = a day in 2 min)")
    parser.add_argument("--pue", type=float, default=1.5,
                        help="data-centre power usage effectiveness applied to all energy (default 1.5)")
    parser.add_argument("--execution", choices=("simulated", "real"), default="simulated",
                        help="simulated: service time/energy from the performance model; real: run the models, "
                             "planned with the profile of the device they run on: this machine's (its GPUs, "
                             "else its CPU, profiled at start-up and cached) on a local cluster, --profile's "
                             "with --address")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants the planner may use (default: all of the service; with "
                             "--execution real on a CPU each is profiled at start-up, so name the few it serves)")
    add_profile_arguments(parser)
    parser.add_argument("--run-dir", default="runs/controller",
                        help="where run.log, run.jsonl, emissions.csv and the desired state (state/) go")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the ingress (default 8000)")
    parser.add_argument("--ingress-replicas", type=int, default=2,
                        help="ingress replicas; each routes by the same table, so one may die without a failed "
                             "request (default 2)")
    parser.add_argument("--on-exit", choices=("keep", "stop"), default="keep",
                        help="keep (default): serving continues without a controller; stop: delete the replicas "
                             "and the ingress")
    parser.add_argument("--detach", action="store_true",
                        help="run the loop as a detached Ray actor (needs --address); stop it with `controller stop`")
    parser.add_argument("--simulate-node", action="store_true",
                        help="no --address: also start a node agent on this machine: a simulated 2-GPU H100 "
                             "node, or with --execution real this machine's own device")


def loop_spec(args: argparse.Namespace) -> tuple[LoopSpec, AgentConfig]:
    """The loop's spec and the node agent of this machine (started with `--simulate-node` on a local
    cluster). With `--execution real` both describe the device the replicas run on: call this
    before Ray starts, since a CPU is profiled with the machine to itself."""
    from controller.loop.assemble import LoopSpec, allowed_variants, known_service
    from controller.loop.settings import LoopSettings
    from gpu_node.devices import AgentConfig

    service = known_service(args.service)
    profiles = tuple(args.profiles or ())
    check_profile_flags(args.execution, profiles, args.profile_seconds)
    run_dir = str(Path(args.run_dir).resolve())
    settings = LoopSettings(args.service, args.lam, args.sla_ms, args.replan_every, args.rate, pue=args.pue,
                            execution=args.execution, variants=allowed_variants(service, args.variants),
                            reconcile_every_s=args.reconcile_every, ingress_replicas=args.ingress_replicas)
    agent = AgentConfig(LOCAL_NODE, state_dir=str(Path(run_dir) / "node-state"))
    if args.execution == "real" and args.address:
        settings = cluster_settings(service, settings, profiles)
    elif args.execution == "real":
        real = prepare_real(service, settings, LOCAL_NODE, agent.state_dir, profiles, args.profile_seconds)
        settings, agent, profiles = real.settings(settings), real.device.agent, real.device.profiles
    return LoopSpec(settings, args.carbon_source, args.time_scale, run_dir, profiles=profiles), agent


def run(args: argparse.Namespace) -> int:
    from controller.serving.runtime import init_ray, shutdown, start_serving, stop_serving

    try:
        spec, node = loop_spec(args)
        if args.detach and not args.address:
            raise ValueError("--detach needs --address: a detached controller must run in a cluster that outlives "
                             "this command (start one with `gpu-node setup --system`)")
        if args.ingress_replicas < 1:
            raise ValueError(f"--ingress-replicas must be >= 1, got {args.ingress_replicas}")
        init_ray(args.address, local_nodes=(LOCAL_NODE,) if args.simulate_node and not args.address else ())
    except (ConnectionError, ValueError, RuntimeError) as exc:  # RuntimeError: profiling this CPU failed
        print(f"controller: {exc}", file=sys.stderr)
        return 2
    local = not args.address
    try:
        if args.simulate_node and local:
            from gpu_node.agent import start_agent

            local_agent = start_agent(node, detached=False)  # keep the handle: it owns the (non-detached) agent
        start_serving([args.service], host=args.host, port=args.port, api_token=os.environ.get("CLOVER_API_TOKEN"),
                      ingress_replicas=args.ingress_replicas)
        if args.detach:
            from controller.loop.detached import start_detached

            start_detached(spec)
            print(f"controller for {args.service} runs detached in the cluster at {args.address}; serving on "
                  f"http://{args.host}:{args.port}/v1/infer; run log in {spec.run_dir}/run.log; "
                  "stop it with `controller stop --address …`")
            return 0
        code = _run_foreground(spec, args, f"http://{args.host}:{args.port}")
        if args.simulate_node and local:
            del local_agent
        return code
    except RuntimeError as exc:
        print(f"controller: {exc}", file=sys.stderr)
        return 2
    finally:
        if local:
            shutdown()
        elif args.on_exit == "stop" and not args.detach:
            stop_serving()


def _run_foreground(spec: LoopSpec, args: argparse.Namespace, url: str) -> int:
    from configs.logsetup import setup_logging
    from controller.loop.assemble import build_loop

    loop = build_loop(spec)
    setup_logging(args.log_level, runlog=loop.events)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        loop.events.event("signal", f"{name} received: finishing the interval and stopping the controller "
                                    f"(serving {'continues' if args.on_exit == 'keep' and args.address else 'stops'})",
                          signal=name)
        loop.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"serving {args.service} on {url}/v1/infer; run log in {spec.run_dir}/run.log")
    loop.start()
    loop.run()
    try:
        loop.finish()
    except Exception as exc:  # noqa: BLE001 - Ray workers may be going down with us
        loop.events.event("error", f"last interval not accounted: {exc!r}", where="shutdown", error=repr(exc))
    t = loop.accountant.totals()
    loop.events.event("end", "controller stopped", summary={
        "reconfigurations": loop.stats.reconfigurations, "mig_layout_changes": loop.rollout.layout_changes,
        "variant_swaps": loop.rollout.variant_swaps, "carbon_g": t.carbon_g, "baseline_carbon_g": t.baseline_carbon_g,
        "requests": t.requests, "failed": t.failed, "accuracy": t.accuracy})
    return 0
