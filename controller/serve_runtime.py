"""Bringing the serving stack up and down: Ray, Serve's HTTP proxy, the ingress, node agents.

Shared by `controller run`, `controller demo`, the tests and the benchmark so that all of them
start the system the same way.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Any

from gpu_node.agent import NAMESPACE, node_resource

NODE_RESOURCE_UNITS = 1000  # each replica takes 0.01: room for far more replicas than slices


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


def init_ray(address: str | None = None, *, local_nodes: tuple[str, ...] = (), num_cpus: int | None = None) -> None:
    """Connect to a cluster, or start a local one whose only node also acts as `local_nodes`."""
    import ray

    ray_env()
    if address:
        check_address(address)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        return
    ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
             num_cpus=num_cpus or max(2, os.cpu_count() or 2),
             resources={node_resource(n): NODE_RESOURCE_UNITS for n in local_nodes})


def start_ingress(service: str, *, host: str = "127.0.0.1", port: int = 8000, api_token: str | None = None) -> Any:
    """Serve's HTTP proxy on host:port and the ingress application; returns the ingress handle."""
    from ray import serve

    from controller.serve_app import INGRESS_APP, ingress_app

    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    return serve.run(ingress_app(service, api_token), name=INGRESS_APP, route_prefix="/")


def shutdown() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
