"""Slice replicas as Ray Serve applications (the `ReplicaRuntime` port).

What runs is read from Serve on every call. A replica the controller did not start itself (a
restarted controller, or one started before a crash) tells its spec through its handle
(`spec_json`), so it can be adopted instead of restarted; specs are cached by application name,
which the spec determines.
"""
from __future__ import annotations

import logging
import time

from ray import serve
from ray.serve.schema import ApplicationStatus

from configs.cluster import REPLICA_PREFIX, node_resource
from controller.loop.view import RUNNING, ReplicaState
from controller.serving.replica import REPLICA_CPUS, ReplicaSpec, replica_app

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0


class ServeReplicas:
    def __init__(self) -> None:
        self._specs: dict[str, ReplicaSpec] = {}

    def _spec(self, name: str, status: str) -> ReplicaSpec | None:
        if name in self._specs:
            return self._specs[name]
        if status != RUNNING:
            return None  # asking a replica that is not up would wait for it
        try:
            doc = serve.get_app_handle(name).spec_json.remote().result(timeout_s=CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - gone or stuck: not adoptable this tick
            log.warning("replica %s did not tell its spec: %s", name, exc)
            return None
        spec = ReplicaSpec(**doc)
        self._specs[name] = spec
        return spec

    def statuses(self) -> dict[str, str]:
        """Every slice-replica application and its Serve status, known or not."""
        return {n: ApplicationStatus(a.status).value for n, a in serve.status().applications.items()
                if n.startswith(REPLICA_PREFIX)}

    def list(self) -> dict[str, ReplicaState]:
        out = {}
        for name, status in self.statuses().items():
            spec = self._spec(name, status)
            if spec is not None:
                out[name] = ReplicaState(spec, status)
        return out

    def deploy(self, specs: list[ReplicaSpec], timeout_s: float) -> None:
        for s in specs:
            self._specs[s.app_name] = s
        deploy_replicas(specs, timeout_s=timeout_s)

    def stop(self, names: list[str]) -> None:
        stop_replicas(names)
        for n in names:
            self._specs.pop(n, None)

    def inflight(self, names: list[str]) -> int:
        calls = []
        for n in names:
            try:
                calls.append(serve.get_app_handle(n).inflight.remote())
            except Exception:  # noqa: BLE001 - already gone: nothing in flight there
                continue
        total = 0
        for c in calls:
            try:
                total += int(c.result(timeout_s=CALL_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - died meanwhile: its requests failed over already
                continue
        return total


# ---- Serve applications of slice replicas -------------------------------------------------------
class PlacementCheckError(RuntimeError):
    """A replica cannot be placed: Serve would otherwise wait for it forever."""


def check_placeable(specs: list[ReplicaSpec]) -> None:
    """Fail with a clear error when a replica's node (custom resource) or CPU is missing."""
    import ray

    total = ray.cluster_resources()
    avail = ray.available_resources()
    need_cpu = REPLICA_CPUS * len(specs)
    for node in sorted({s.node for s in specs}):
        res = node_resource(node)
        if total.get(res, 0.0) <= 0:
            raise PlacementCheckError(
                f"cannot place replicas on node {node!r}: no Ray node advertises resource {res!r}; "
                f"start the node with `gpu-node setup --system` (it adds that resource)"
            )
        need = 0.01 * sum(1 for s in specs if s.node == node)
        if avail.get(res, 0.0) + 1e-9 < need:
            raise PlacementCheckError(
                f"node {node!r}: {need:.2f} of {res!r} needed for {need / 0.01:.0f} replicas, "
                f"only {avail.get(res, 0.0):.2f} free"
            )
    if avail.get("CPU", 0.0) + 1e-9 < need_cpu:
        raise PlacementCheckError(
            f"{len(specs)} replicas need {need_cpu:.2f} CPU, only {avail.get('CPU', 0.0):.2f} free in the cluster"
        )


def deploy_replicas(specs: list[ReplicaSpec], timeout_s: float = 120.0) -> None:
    """Start replicas (in parallel) and wait until each answers; raise with the names that did not."""
    from ray.serve.api import RunTarget

    if not specs:
        return
    check_placeable(specs)
    try:
        serve.run_many([RunTarget(replica_app(s), name=s.app_name, route_prefix=None) for s in specs],
                       wait_for_applications_running=False)
        wait_apps([s.app_name for s in specs], timeout_s)
    except Exception:
        stop_replicas([s.app_name for s in specs])  # none may linger on a slice the rollback frees
        raise


def wait_apps(names: list[str], timeout_s: float) -> None:
    """Wait until the named applications are RUNNING; an app that failed or timed out raises."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        apps = serve.status().applications
        for n in list(pending):
            st = apps.get(n)
            if st is None:
                continue
            if st.status == "RUNNING":
                pending.discard(n)
            elif st.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise RuntimeError(f"replica {n} failed to start: {st.message or st.status}")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"replicas not running after {timeout_s:.0f}s: {sorted(pending)}")
        if pending:
            time.sleep(0.2)


def stop_replicas(names: list[str], timeout_s: float = 60.0) -> None:
    """Delete replica applications (in parallel) and wait until they are gone."""
    for n in names:
        serve.delete(n, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        apps = serve.status().applications
        if not any(n in apps for n in names):
            return
        time.sleep(0.2)
    raise TimeoutError(f"replicas still present after {timeout_s:.0f}s: {names}")
