"""Slice replicas as Ray Serve applications (the `ReplicaRuntime` port).

What runs is read from Serve on every call. A replica the controller did not start itself (a
restarted controller, or one started before a crash) tells its spec through its handle
(`spec_json`), so it can be adopted instead of restarted; specs are cached by application name,
which the spec determines.
"""
from __future__ import annotations

import logging

from ray import serve
from ray.serve.schema import ApplicationStatus

from controller.loop.view import RUNNING, ReplicaState
from controller.serving.replica import REPLICA_PREFIX, ReplicaSpec, deploy_replicas, stop_replicas

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
