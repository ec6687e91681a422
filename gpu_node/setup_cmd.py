"""`gpu-node setup --system`: check this node, join the Ray cluster, start the node agent.

    gpu-node setup --system --address HEAD:6379            # a real GPU node joins the cluster
    gpu-node setup --system --partition mps --address …    # a GPU without MIG: MPS shares (daemon checked)
    gpu-node setup --system --simulate --gpus 2            # a simulated 2×H100 node, local head

Joining runs `ray start` (a node joins a cluster through its own raylet; the head's address is
checked first, so an unreachable one fails in seconds with a clear message instead of hanging).
The node advertises the custom resource `clover_node_<name>`, which pins the node agent and the
node's replicas to it, and a pool `clover_mig_slice` of its GPUs' compute slices (7 per H100):
Ray fixes a node's resources when it starts, so the pool is declared whole here and the agent
holds the part Clover uses (gpu_node/free_capacity.py); the rest is free for other Ray work. MIG mode is only checked here; `gpu-node mig enable` changes it. With
`--partition mps` the MPS control daemon must already run: if it does not, setup stops and
prints the command that starts it (`nvidia-cuda-mps-control -d`; no GPU reset).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from gpu_node.devices import AgentConfig
from gpu_node.node_check import NodeReport
from gpu_node.records import NodeInfo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", action="store_true",
                        help="set this machine up as a Clover GPU node (joins Ray, starts the agent)")
    parser.add_argument("--address", help="Ray head HOST:PORT to join (default: start a local head)")
    parser.add_argument("--node-name", default=None, help="node name in plans and logs (default: host name)")
    parser.add_argument("--port", type=int, default=6379, help="GCS port when starting a local head (default 6379)")
    parser.add_argument("--simulate", action="store_true", help="simulated GPUs instead of NVIDIA ones")
    parser.add_argument("--partition", choices=["mig", "mps"], default="mig",
                        help="slice GPUs by MIG instances (default) or by MPS shares (GPUs without MIG, or MIG off)")
    parser.add_argument("--gpus", type=int, default=2, help="simulated GPU count (default 2)")
    parser.add_argument("--gpu-type", default="H100-80GB", help="simulated GPU type (default H100-80GB)")
    parser.add_argument("--node-ip-address", default=None,
                        help="the address Ray advertises for this node (and binds where it can), e.g. 127.0.0.1 "
                             "for a single machine; default: Ray's choice")
    parser.add_argument("--state-dir", default=None,
                        help="where the node keeps its partition state and slice leases (default ~/.clover/<node>)")


def ray_start_command(address: str | None, port: int, resources: dict[str, float],
                      node_ip: str | None = None) -> list[str]:
    """The `ray start` argv that joins (or starts) the cluster with this node's resources (no shell).
    The dashboard stays off (one listener fewer; docs/control-plane.md lists Ray's listeners)."""
    import json

    res = json.dumps(resources)
    ray_cli = ray_executable()
    ip = [f"--node-ip-address={node_ip}"] if node_ip else []
    if address:
        return [ray_cli, "start", f"--address={address}", f"--resources={res}", *ip]
    return [ray_cli, "start", "--head", f"--port={port}", f"--resources={res}", "--include-dashboard=false", *ip]


def ray_executable() -> str:
    """The `ray` CLI of this Python environment: the venv need not be activated (not on PATH)."""
    import shutil

    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise FileNotFoundError(f"the `ray` command is not installed next to {sys.executable} nor on PATH; "
                                "install Clover's dependencies (`make env`) in this environment")
    return found


def ensure_ray_token(joining: bool) -> None:
    """Make sure a Ray auth token exists before `ray start` (Clover runs Ray with token auth).

    A new head generates one (`ray get-auth-token --generate`, written to ~/.ray/auth_token,
    never printed); a node joining a cluster must use the head's token, so it is an error to
    have none.
    """
    if os.environ.get("RAY_AUTH_MODE", "token") == "disabled":
        return
    default = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or default.exists():
        return
    if joining:
        raise ValueError(
            f"no Ray auth token on this node: copy {default} from the head node here (same path), or set "
            "RAY_AUTH_TOKEN to its content (`ray get-auth-token` on the head prints it)")
    done = subprocess.run([ray_executable(), "get-auth-token", "--generate"], capture_output=True, text=True,
                          timeout=60, check=False)  # output holds the token: never shown
    if done.returncode != 0 or not default.exists():
        raise ValueError(f"could not generate a Ray auth token (exit {done.returncode}); "
                         "run `ray get-auth-token --generate` and retry")


def bring_up_agent(cfg: AgentConfig, ray_node_id: str | None = None) -> NodeInfo:
    """Start the detached node agent on a Ray node (this one by default) and return its info()."""
    import ray

    from gpu_node.agent import start_agent

    agent = start_agent(cfg, ray_node_id=ray_node_id, detached=True)
    return ray.get(agent.info.remote())


def print_summary(info: NodeInfo, address: str, warnings: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Clover node {info.node} ({'simulated' if info.simulated else 'NVIDIA'}) joined {address}")
    for col in ("GPU", "type", "partitioning", "slices (profile@start → device)"):
        t.add_column(col)
    for g in info.gpus:
        slices = "\n".join(f"{s.profile}@{s.start} → {s.uuid}" for s in g.slices) or "-"
        t.add_row(str(g.index), g.gpu_type, f"{g.partitioning.upper()} {'on' if g.enabled else 'off'}", slices)
    c = Console()
    c.print(t)
    for w in warnings:
        c.print(f"[yellow]warning:[/] {w}")
    c.print(f"agent: clover-agent-{info.node} (namespace clover), resource {info.resource}")


def check_node(cfg: AgentConfig) -> NodeReport:
    """The checks for this node: its simulated backend, or NVML (and the MPS daemon for MPS)."""
    from gpu_node.devices import mps_daemon, partition_backend
    from gpu_node.node_check import check_nvml, check_simulated
    from mig.leases import LeaseBook

    daemon = mps_daemon(cfg) if cfg.partition == "mps" else None
    if cfg.simulate:
        return check_simulated(partition_backend(cfg, LeaseBook()), daemon)
    return check_nvml(daemon=daemon)


def run(args: argparse.Namespace) -> int:
    from configs.cluster import check_address, node_name, node_resources, ray_env
    from gpu_node.free_capacity import slice_units

    if not args.system:
        print("gpu-node setup: add --system to set this machine up as a Clover GPU node "
              "(it runs `ray start` and starts a long-lived node agent)", file=sys.stderr)
        return 2
    try:
        name = node_name(args.node_name)
        if args.address:
            check_address(args.address)
    except (ValueError, ConnectionError) as exc:
        print(f"gpu-node setup: {exc}", file=sys.stderr)
        return 2
    cfg = AgentConfig(name, simulate=args.simulate, gpus=args.gpus, gpu_type=args.gpu_type,
                      state_dir=args.state_dir, partition=args.partition)
    report = check_node(cfg)
    if not report.ok:
        print("gpu-node setup: " + "; ".join(report.problems), file=sys.stderr)
        return 2
    ray_env()
    try:
        ensure_ray_token(joining=bool(args.address))
    except ValueError as exc:
        print(f"gpu-node setup: {exc}", file=sys.stderr)
        return 2
    cmd = ray_start_command(args.address, args.port, node_resources(name, slice_units(cfg)), args.node_ip_address)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        print(f"gpu-node setup: `{' '.join(cmd)}` failed (exit {done.returncode}):\n"
              f"{(done.stderr or done.stdout)[-2000:]}", file=sys.stderr)
        return 1
    import ray

    address = args.address or f"127.0.0.1:{args.port}"
    ray.init(address="auto", namespace="clover", log_to_driver=False)
    try:
        info = bring_up_agent(cfg)
    finally:
        ray.shutdown()
    print_summary(info, address, report.warnings)
    return 0
