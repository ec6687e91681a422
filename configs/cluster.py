"""The cluster contract every Clover process shares: the Ray namespace, node names and where a
node keeps its state, the names node agents register under, the custom resources a GPU node
advertises (its pinning resource and its pool of compute-slice units), the environment Ray
processes need, and the reachability check before joining a cluster.

Ground floor: `controller`, `gpu_node` and the tests import it; it imports nothing of theirs.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

NAMESPACE = "clover"
AGENT_PREFIX = "clover-agent-"
# Every slice-replica Serve application's name starts so; it also owns the replica's slice lease,
# which is how the controller tells its own leases from those of other work that borrowed a slice.
REPLICA_PREFIX = "replica-"


def agent_name(node: str) -> str:
    return f"{AGENT_PREFIX}{node}"


def node_name(given: str | None = None) -> str:
    """A node's name in plans, logs and agent names: `given`, else this host's short name (cleaned)."""
    name = given or socket.gethostname().split(".")[0]
    clean = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    if not clean:
        raise ValueError(f"node name {given!r} has no usable characters; pass --node-name")
    return clean


def node_state_dir(node: str | None = None) -> Path:
    """Where a node keeps its partition state and slice leases (`~/.clover/<node>`)."""
    return Path.home() / ".clover" / node_name(node)


def node_resource(node: str) -> str:
    """The custom Ray resource a GPU node advertises; replicas request a sliver of it to land there."""
    return f"clover_node_{node}"


# Compute slices (7 per H100) of a node's GPUs, advertised once at `ray start`: the node agent holds
# the units Clover uses and leaves the rest to any Ray task that asks for them
# (gpu_node/free_capacity.py, docs/control-plane.md "Free capacity").
SLICE_RESOURCE = "clover_mig_slice"
NODE_RESOURCE_UNITS = 1000  # each replica takes 0.01 of `node_resource`: room for far more replicas than slices


def node_resources(node: str, slice_units: int) -> dict[str, float]:
    """Everything a GPU node advertises: its pinning resource and its pool of compute-slice units."""
    return {node_resource(node): NODE_RESOURCE_UNITS, **({SLICE_RESOURCE: slice_units} if slice_units else {})}


def ray_env() -> None:
    """Environment every Ray process of ours should see (offline models, no telemetry).

    Ray token authentication is on by default (`RAY_AUTH_MODE=token`, the same on every node,
    token in ~/.ray/auth_token or RAY_AUTH_TOKEN): since Ray 2.59 a cluster started with
    `ray start` enforces it, and a client that connects by address without it is refused.
    Export RAY_AUTH_MODE=disabled to join a cluster that runs without authentication.
    Ray reads the mode when it is imported, so it is only set while Ray is not imported yet:
    changing it afterwards would start clusters whose mode differs from this process's.
    """
    defaults = {"RAY_USAGE_STATS_ENABLED": "0", "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1"}
    if "ray" not in sys.modules:
        defaults["RAY_AUTH_MODE"] = "token"
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a clear message when a Ray address does not answer (ray.init would hang)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Ray address {address!r} must be HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start the head with "
            f"`ray start --head --port {port}` there, or check host, port and firewall"
        ) from None
