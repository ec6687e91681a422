"""Bringing the serving stack up and down: Ray, Serve's HTTP proxy, the ingress, node agents.

Shared by `controller run`, `controller demo`, the tests and the benchmark so that all of them
start the system the same way.
"""
from __future__ import annotations

import os

from configs.cluster import NAMESPACE, check_address, node_resources, ray_env
from controller.serving.control_bus import BusClient, bus_handle


def init_ray(address: str | None = None, *, local_nodes: tuple[str, ...] = (), slice_units: int = 0,
             num_cpus: int | None = None) -> None:
    """Connect to a cluster, or start a local one whose only node also acts as `local_nodes`.

    `slice_units`: the pool of compute-slice units the local node advertises, as `gpu-node setup`
    does for a GPU node (`gpu_node.free_capacity.slice_units`), so that capacity no service needs is
    given back to Ray here as on a cluster. Give it only when the node acts as one GPU node: the
    pool is the Ray node's, and each node agent on it would take it for its own."""
    import ray

    ray_env()
    if address:
        check_address(address)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        return
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
             num_cpus=num_cpus or max(2, os.cpu_count() or 2),
             resources={k: v for n in local_nodes for k, v in node_resources(n, slice_units).items()})


def start_serving(services: list[str], *, host: str = "127.0.0.1", port: int = 8000, api_token: str | None = None,
                  ingress_replicas: int = 2) -> BusClient:
    """Serve's HTTP proxy on host:port, the control bus and the ingress; returns the bus client.

    What already runs is kept: a restarted controller finds the bus and the ingress replicas of
    the previous one and only re-deploys the ingress if it is missing, failed, or has another
    number of replicas (a rolling update then, so serving never stops).
    """
    from ray import serve

    from controller.serving.ingress import INGRESS_APP, ingress_app

    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    bus = BusClient(bus_handle(create=True))
    bus.started_at()  # the bus is up before an ingress replica asks it for routes
    app = serve.status().applications.get(INGRESS_APP)
    running = app is not None and app.status == "RUNNING" and \
        sum(app.deployments["ingress"].replica_states.values()) == ingress_replicas
    if not running:
        serve.run(ingress_app(services, api_token, ingress_replicas), name=INGRESS_APP, route_prefix="/")
    return bus


def stop_serving() -> None:
    """Delete every Clover application and the bus (`controller stop --and-serving`)."""
    import ray
    from ray import serve

    from configs.cluster import REPLICA_PREFIX

    for name in serve.status().applications:
        if name.startswith(REPLICA_PREFIX) or name == "clover":
            serve.delete(name)
    try:
        ray.kill(bus_handle())
    except ValueError:
        pass


def shutdown() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
