"""Bringing the serving stack up and down: Ray, Serve's HTTP proxy, the ingress, node agents.

Shared by `controller run`, `controller demo`, the tests and the benchmark so that all of them
start the system the same way.
"""
from __future__ import annotations

import os
from typing import Any

from configs.cluster import NAMESPACE, check_address, node_resource, ray_env

NODE_RESOURCE_UNITS = 1000  # each replica takes 0.01: room for far more replicas than slices


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

    from controller.serving.ingress import INGRESS_APP, ingress_app

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
