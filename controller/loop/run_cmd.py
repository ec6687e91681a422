"""`controller run --service yolo|efficientnet|albert …` (bare `controller --service …` too), one
service or several side by side (`--service yolo,albert --rate yolo=40,albert=8`, or `--config FILE`).

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
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from configs.cli import UsageError
from configs.deployment import DeploymentConfig
from configs.deployment_flags import add_deployment_arguments, add_service_arguments, deployment_from_args
from configs.loader import ConfigError
from controller.loop.real_execution import add_profile_arguments, check_profile_flags, cluster_settings, prepare_real

if TYPE_CHECKING:
    from controller.loop.assemble import LoopSpec
    from controller.loop.settings import LoopSettings
    from gpu_node.devices import AgentConfig

LOCAL_NODE = "local"  # the node a local cluster's only machine acts as


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_service_arguments(parser)  # --config, --service, --rate, --sla-ms, --lambda, --variants, --min-accuracy
    add_deployment_arguments(parser)  # --carbon-source … --on-exit
    add_profile_arguments(parser)
    parser.add_argument("--detach", action="store_true",
                        help="run the loop as a detached Ray actor (needs --address); stop it with `controller stop`")
    parser.add_argument("--simulate-node", action="store_true",
                        help="no --address: also start a node agent on this machine: a simulated 2-GPU H100 "
                             "node, or with --execution real this machine's own device")


@dataclass(frozen=True)
class RunPlan:
    """What `controller run` was asked for: the loop's spec, this machine's node agent (started with
    `--simulate-node` on a local cluster) and the deployment (address, HTTP, exit behaviour)."""

    spec: LoopSpec
    agent: AgentConfig
    deployment: DeploymentConfig

    @property
    def services(self) -> list[str]:
        return [s.name for s in self.deployment.services]


def loop_settings(config: DeploymentConfig) -> LoopSettings:
    """The loop's settings for a deployment: its first service in the settings' own fields, the
    others served beside it."""
    from controller.loop.settings import LoopSettings, ServiceSettings

    first, *others = config.services
    lam = {s.name: config.lam if s.lam is None else s.lam for s in config.services}
    return LoopSettings(first.name, lam[first.name], first.sla_ms, config.replan_every_s, first.rate_rps,
                        pue=config.pue, execution=config.execution, variants=first.variants,
                        reconcile_every_s=config.reconcile_every_s, ingress_replicas=config.ingress_replicas,
                        drain_timeout_s=config.drain_timeout_s, stuck_after_s=config.stuck_after_s,
                        hold_intervals=config.hold_intervals, merge_idle_after_s=config.merge_idle_after_s,
                        transition_sla_factor=config.transition_sla_factor,
                        min_accuracy=first.min_accuracy,
                        more_services=tuple(ServiceSettings(s.name, lam[s.name], s.sla_ms, s.rate_rps, s.variants,
                                                            s.min_accuracy) for s in others))


def run_plan(args: argparse.Namespace) -> RunPlan:
    """The run the flags (and `--config`) ask for. With `--execution real` the spec and the agent
    describe the device the replicas run on: call this before Ray starts, since a CPU is profiled
    with the machine to itself. Raises UsageError/ConfigError/ValueError (exit 2)."""
    from controller.loop.assemble import LoopSpec, known_service
    from gpu_node.devices import AgentConfig

    config = deployment_from_args(args)
    settings = loop_settings(config)
    profiles = tuple(args.profiles or ())
    check_profile_flags(config.execution, profiles, args.profile_seconds)
    run_dir = str(Path(config.run_dir).resolve())
    agent = AgentConfig(LOCAL_NODE, state_dir=str(Path(run_dir) / "node-state"))
    if config.execution == "real":
        if len(config.services) > 1:
            raise ValueError("--execution real serves one service (the device profile describes one); "
                             f"got {', '.join(s.name for s in config.services)}")
        service = known_service(settings.service)
        if config.address:
            settings = cluster_settings(service, settings, profiles)
        else:
            real = prepare_real(service, settings, LOCAL_NODE, agent.state_dir, profiles, args.profile_seconds)
            settings, agent, profiles = real.settings(settings), real.device.agent, real.device.profiles
    spec = LoopSpec(settings, config.carbon_source, config.time_scale, run_dir, profiles=profiles,
                    trace_start_h=config.trace_start_h)
    return RunPlan(spec, agent, config)


def loop_spec(args: argparse.Namespace) -> tuple[LoopSpec, AgentConfig]:
    """The loop's spec and this machine's node agent (see `run_plan`)."""
    plan = run_plan(args)
    return plan.spec, plan.agent


def run(args: argparse.Namespace) -> int:
    from controller.serving.runtime import init_ray, shutdown, start_serving, stop_serving
    from gpu_node.free_capacity import slice_units

    try:
        plan = run_plan(args)
        config = plan.deployment
        if args.detach and not config.address:
            raise ValueError("--detach needs --address: a detached controller must run in a cluster that outlives "
                             "this command (start one with `gpu-node setup --system`)")
        node_here = args.simulate_node and not config.address  # this machine is the (simulated) GPU node
        init_ray(config.address, local_nodes=(LOCAL_NODE,) if node_here else (),
                 slice_units=slice_units(plan.agent) if node_here else 0)
    except (ConnectionError, ValueError, RuntimeError, UsageError, ConfigError) as exc:  # RuntimeError: profiling
        print(f"controller: {exc}", file=sys.stderr)
        return 2
    local = not config.address
    spec = plan.spec
    url = f"http://{config.host}:{config.port}"
    endpoints = f"{url}/v1/infer" if len(plan.services) == 1 else f"{url}/v1/{{{','.join(plan.services)}}}/infer"
    try:
        if args.simulate_node and local:
            from gpu_node.agent import start_agent

            local_agent = start_agent(plan.agent, detached=False)  # keep the handle: it owns the (non-detached) agent
        start_serving(plan.services, host=config.host, port=config.port,
                      api_token=os.environ.get("CLOVER_API_TOKEN"), ingress_replicas=config.ingress_replicas)
        if args.detach:
            from controller.loop.detached import start_detached

            start_detached(spec)
            print(f"controller for {', '.join(plan.services)} runs detached in the cluster at {config.address}; "
                  f"serving on {endpoints}; run log in {spec.run_dir}/run.log; stop it with `controller stop --address …`")
            return 0
        code = _run_foreground(spec, args, config, endpoints)
        if args.simulate_node and local:
            del local_agent
        return code
    except RuntimeError as exc:
        print(f"controller: {exc}", file=sys.stderr)
        return 2
    finally:
        if local:
            shutdown()
        elif config.on_exit == "stop" and not args.detach:
            stop_serving()


def _run_foreground(spec: LoopSpec, args: argparse.Namespace, config: DeploymentConfig, endpoints: str) -> int:
    from configs.logsetup import setup_logging
    from controller.loop.assemble import build_loop

    loop = build_loop(spec)
    setup_logging(args.log_level, runlog=loop.events)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        loop.events.event("signal", f"{name} received: finishing the interval and stopping the controller "
                                    f"(serving {'continues' if config.on_exit == 'keep' and config.address else 'stops'})",
                          signal=name)
        loop.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"serving on {endpoints}; run log in {spec.run_dir}/run.log")
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
