"""One Serve replica per slice: its spec, the deployment class and its application (deploying and
stopping them is controller/loop/replicas.py).

Why one small Serve *application* per slice: a running Serve application cannot cheaply gain or
lose deployments, but applications can be added and deleted independently. Each slice replica is
therefore its own application (`replica-<node>-g<gpu>-<Ng>s<start>-<service>-<variant>-b<batch>`, no HTTP
route); the ingress reaches it with `serve.get_app_handle`. New replicas are deployed and warmed
before traffic moves to them (make-before-break); old ones are deleted after draining.

Pinning: each replica requests a sliver of its node's custom resource (`clover_node_<node>`),
so it lands on the node that owns its slice, and sees only that slice through the environment
the node gives for it (`SliceRecord.env`: `CUDA_VISIBLE_DEVICES=<MIG uuid>`, or the MPS limits),
set both in the runtime env and in `__init__` before anything initialises CUDA. `OMP_NUM_THREADS`
is overridden (Ray sets it to the replica's fractional CPU count, i.e. 1, which halves CPU
inference).

Ownership: a replica holds a lease on its slice at the node agent (taken at start, renewed every
`RENEW_EVERY_S`, released on shutdown), so the node can tell a slice in use from a stale mark
left by a process that no longer exists. A replica answers `spec()` and `inflight()`, so a
restarted controller can adopt it and drains wait on the replica's own count.

Execution: `simulated` sleeps for the performance model's batch service time and reports the
batch to the node agent (energy of a simulated GPU), its slice time kept by the simulated
device's own clock (controller/serving/slice_clock.py); `real` runs `models.runner.ModelRunner`
and its slice time is the wall clock.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from ray import serve

from configs.cluster import REPLICA_PREFIX
from controller.serving.batcher import GreedyBatcher
from controller.serving.slice_clock import SliceClock
from mig.leases import RENEW_EVERY_S

REPLICA_CPUS = 0.05  # fractional so a 2-core demo machine holds 14 replicas
MAX_ONGOING = 256  # Serve's default (5) throttles a replica to ~15 req/s; the router bounds queues


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica needs to serve one variant on one MIG slice."""

    service: str
    variant: str
    variant_key: str  # performance-profile key, e.g. "yolo:yolo11n"
    input: str  # "image" or "qa-json"
    batch: int
    node: str
    gpu: int  # GPU index on its node
    gpu_id: str  # plan GPU id, "<node>/gpu<i>"
    gpu_type: str
    profile: str
    start: int
    compute_slices: int
    gi_id: int
    device_env: dict[str, str]  # what the node says a process on this slice must see
    execution: str = "simulated"  # or "real"
    threads: int = 1
    weights_dir: str | None = None

    @property
    def app_name(self) -> str:
        # "4g.40gb" -> "4g40gb", "1g.10gb+me" -> "1g10gbme": with the start it names the slice
        # uniquely (1g.10gb and 1g.20gb may both start at slot 0)
        profile = self.profile.replace(".", "").replace("+", "")
        return f"{REPLICA_PREFIX}{self.node}-g{self.gpu}-{profile}s{self.start}-{self.service}-{self.variant}-b{self.batch}"

    @property
    def slice_id(self) -> str:
        """Unique within its GPU (the accountant's and the simulated device's slice key)."""
        return f"{self.profile}@{self.start}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _error(status: int, message: str) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": message}


class SliceReplica:
    """The Serve deployment body (wrapped by `serve.deployment` in `replica_app`)."""

    async def __init__(self, spec: dict[str, Any]) -> None:
        # Before anything can initialise CUDA: this process must only see its own slice.
        os.environ.update(spec["device_env"])
        os.environ["OMP_NUM_THREADS"] = str(spec["threads"])
        self.spec = ReplicaSpec(**spec)
        self._runner = None
        self._perf = None
        self._agent: Any = None
        self._served = 0
        self._inflight = 0
        if self.spec.execution == "real":
            from models.runner import ModelRunner

            device = "cuda" if "CUDA_VISIBLE_DEVICES" in self.spec.device_env and _cuda_ok() else "cpu"
            self._runner = ModelRunner(self.spec.service, self.spec.variant, device=device,
                                       weights_dir=self.spec.weights_dir, threads=self.spec.threads)
            self._runner.warmup((1, self.spec.batch))  # warm before the router sends traffic
        else:
            from models import preprocess  # the decoders (no torch): loaded now, not on the first request
            from models.performance import PerformanceModel

            self._check = preprocess.decode_image if self.spec.input == "image" else preprocess.parse_qa
            self._perf = PerformanceModel.default()
        self._clock = SliceClock()
        # items are (payload, arrival on the host's monotonic clock)
        self._batcher: GreedyBatcher[tuple[bytes, float], dict[str, Any]] = GreedyBatcher(self._run_batch,
                                                                                         self.spec.batch)
        await self._renew_lease()
        self._lease_task = asyncio.get_running_loop().create_task(self._keep_lease())

    # -- the slice lease at the node agent --------------------------------------------------------
    def _agent_handle(self) -> Any:
        import ray

        from configs.cluster import NAMESPACE, agent_name

        if self._agent is None:
            try:
                self._agent = ray.get_actor(agent_name(self.spec.node), namespace=NAMESPACE)
            except ValueError:
                return None  # agent gone: keep serving; energy is then estimated, the lease renewed later
        return self._agent

    async def _renew_lease(self) -> None:
        agent = self._agent_handle()
        if agent is None:
            return
        try:
            await asyncio.wait_for(agent.acquire_lease.remote(self.spec.gpu, self.spec.gi_id, self.spec.app_name),
                                   RENEW_EVERY_S)
        except Exception:  # noqa: BLE001 - agent restarting or re-created: look it up again next time
            self._agent = None

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            await self._renew_lease()

    def __del__(self) -> None:
        """Serve calls this on graceful shutdown: give the slice back at once (else the lease expires)."""
        agent = self._agent
        if agent is not None:
            try:
                agent.release_lease.remote(self.spec.gpu, self.spec.gi_id, self.spec.app_name)
            except Exception:  # noqa: BLE001 - best effort; the lease expires anyway
                pass

    # -- requests ----------------------------------------------------------------------------------
    async def __call__(self, payload: bytes) -> dict[str, Any]:
        from models.errors import PayloadError

        self._inflight += 1
        try:
            if self._runner is None:  # reject malformed input before batching: it fails alone
                await asyncio.to_thread(self._check, payload)  # CPU decode off the event loop
            return dict(await self._batcher.submit((payload, time.perf_counter())))
        except PayloadError as exc:
            return _error(exc.status, str(exc))
        finally:
            self._inflight -= 1

    async def _run_batch(self, items: list[tuple[bytes, float]]) -> list[dict[str, Any]]:
        """One batch on the slice; the batcher runs one batch at a time, like a GPU queue.

        Each result carries `replica_ms`, the request's time on the slice (batching wait, queue
        and service): what the planner's p95 predicts and the SLA bounds; the HTTP/Ray path
        before it is measured by the ingress.
        """
        payloads = [p for p, _ in items]
        t0 = time.perf_counter()
        agent = self._agent_handle()
        if agent is not None:  # fire-and-forget, as the batch starts: the device's busy interval begins now
            agent.record_batch.remote(self.spec.gpu, self.spec.compute_slices, self.spec.variant_key,
                                      len(payloads), self.spec.slice_id)
        if self._runner is not None:
            results = await asyncio.to_thread(self._infer_real, payloads)
            done_at = time.perf_counter()
            service_ms = (done_at - t0) * 1000.0
        else:
            service_ms = self._perf.batch_latency_ms(
                self.spec.variant_key, self.spec.gpu_type, self.spec.compute_slices, len(payloads))
            done_at = self._clock.run([a for _, a in items], service_ms / 1000.0)
            await asyncio.sleep(max(0.0, done_at - time.perf_counter()))
            results = [{"ok": True} for _ in payloads]
        if agent is not None:  # busy time (measured on real GPUs): what per-slice attribution uses
            agent.record_busy.remote(self.spec.gpu, self.spec.slice_id, service_ms / 1000.0)
        self._served += len(payloads)
        for r, (_, arrived) in zip(results, items):
            r.update(variant=self.spec.variant, batch=len(payloads), service_ms=service_ms,
                     slice=self.spec.slice_id, replica_ms=(done_at - arrived) * 1000.0)
        return results

    def _infer_real(self, payloads: list[bytes]) -> list[dict[str, Any]]:
        """Pre-process each payload alone (a bad one fails alone), run the good ones as one batch."""
        from models.errors import PayloadError

        out: list[dict[str, Any]] = [{} for _ in payloads]
        items, where = [], []
        for i, p in enumerate(payloads):
            try:
                items.append(self._runner.preprocess(p))
                where.append(i)
            except PayloadError as exc:
                out[i] = _error(exc.status, str(exc))
        for i, r in zip(where, self._runner.infer_batch(items)):
            out[i] = {"ok": True, "result": r}
        return out

    def stats(self) -> dict[str, Any]:
        import ray

        return {"served": self._served, "app": self.spec.app_name, "ray_node_id": ray.get_runtime_context().get_node_id(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    async def spec_json(self) -> dict[str, Any]:
        """What this replica serves, so a restarted controller can adopt it without a restart."""
        return self.spec.to_json()

    async def inflight(self) -> int:
        """Requests inside this replica now (queued for a batch or running): what a drain waits on."""
        return self._inflight

    def check_health(self) -> None:
        """Serve calls this periodically; a replica that answers is healthy."""


def _cuda_ok() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def replica_app(spec: ReplicaSpec) -> Any:
    """The Serve application of one slice replica, pinned to its node and slice."""
    from configs.cluster import node_resource

    env = {**spec.device_env, "OMP_NUM_THREADS": str(spec.threads)}
    dep = serve.deployment(
        SliceReplica,
        name="slice",
        num_replicas=1,
        max_ongoing_requests=MAX_ONGOING,
        health_check_period_s=2.0,
        ray_actor_options={"num_cpus": REPLICA_CPUS, "resources": {node_resource(spec.node): 0.01},
                           "runtime_env": {"env_vars": env}},
    )
    return dep.bind(spec.to_json())
