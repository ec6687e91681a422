"""The node agent: one named Ray actor per GPU node that owns the node's MIG state and meters.

Why an actor: MIG changes and energy counters are per *node* (nvidia-smi and NVML act on local
devices), while the controller runs elsewhere. The agent is detached and named
(`clover-agent-<node>` in namespace "clover") so the controller finds it with
`ray.get_actor`, and it is pinned to its node (NodeAffinitySchedulingStrategy) so its
nvidia-smi calls hit the right GPUs. Every replica of the node is pinned there too through the
custom resource `clover_node_<node>` the node advertises.

On a simulated node the agent also owns one `SimulatedGpu` per GPU: replicas report each batch
they "executed" (`record_batch`), and the agent's energy counter integrates idle power plus the
dynamic energy of that busy time, like NVML's total-energy counter on a real GPU.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.cluster import NAMESPACE, agent_name, node_resource
from gpu_node.records import GpuRecord, IntervalEnergy, LeaseRecord, MigOpRecord, NodeInfo, SliceRecord
from mig.types import GpuInstance, Placement, canonical

LEASE_TTL_S = 30.0  # a lease not renewed for this long is stale (replicas renew every 5 s)


@dataclass(frozen=True)
class AgentConfig:
    """How to build a node agent (also what `gpu-node setup` passes)."""

    node: str
    simulate: bool = True
    gpus: int = 2
    gpu_type: str = "H100-80GB"
    state_dir: str | None = None
    mig_op_delay_s: float = 0.0  # simulated nvidia-smi latency per create/destroy


def _slice_record(inst: GpuInstance) -> SliceRecord:
    return SliceRecord(inst.gi_id, inst.profile, inst.start, inst.size, inst.uuid, {"CUDA_VISIBLE_DEVICES": inst.uuid})


class NodeAgent:
    """The agent's logic; `start_agent` wraps it as a detached Ray actor."""

    def __init__(self, cfg: AgentConfig) -> None:
        from configs import load_gpu_catalog
        from models.performance import PerformanceModel

        self.cfg = cfg
        self._lock = threading.Lock()
        self._catalog = load_gpu_catalog()
        self._devices: dict[int, Any] = {}
        if cfg.simulate:
            from gpu_node.simulated_gpu import SimulatedGpu
            from mig.simulated import SimulatedMigBackend

            state_dir = Path(cfg.state_dir) if cfg.state_dir else Path.home() / ".clover" / cfg.node
            state_dir.mkdir(parents=True, exist_ok=True)
            self.backend = SimulatedMigBackend([(cfg.gpu_type, cfg.gpus)], state_dir / "mig-state.json",
                                               mig_enabled=True)
            perf = PerformanceModel.default()
            for g in self.backend.list_gpus():
                self._devices[g.index] = SimulatedGpu(g.gpu_type, perf)
        else:
            from mig.nvidia_smi import NvidiaSmiBackend

            self.backend = NvidiaSmiBackend()
        self._busy_seen: dict[tuple[int, str], float] = {}  # (gpu, slice) -> busy seconds at last read
        self._started_at = time.time()
        self._leases: dict[tuple[int, int, str], float] = {}  # (gpu, gi_id, owner) -> renewed at
        self._meter = self._make_meter()
        self._meter.begin_window("interval")

    def _make_meter(self) -> Any:
        if self.cfg.simulate:
            from gpu_node.meters.simulated import SimulatedGpuMeter

            return SimulatedGpuMeter({self.gpu_id(i): d for i, d in self._devices.items()})
        from gpu_node.meters.nvml import NvmlMeter

        return NvmlMeter()

    def gpu_id(self, index: int) -> str:
        return f"{self.cfg.node}/gpu{index}"

    def _gpu_ids(self) -> set[str]:
        return {self.gpu_id(g.index) for g in self.backend.list_gpus()}

    # -- inspection --------------------------------------------------------------------------
    def ping(self) -> str:
        return self.cfg.node

    def info(self) -> NodeInfo:
        """The node, its GPUs and their current slices (MIG UUID, profile, placement)."""
        import ray

        gpus = []
        for g in self.backend.list_gpus():
            slices = tuple(_slice_record(i) for i in self.backend.list_instances(g.index)) if g.mig_enabled else ()
            gpus.append(GpuRecord(g.index, self.gpu_id(g.index), g.uuid, g.name, g.gpu_type, "mig", g.mig_enabled,
                                  slices))
        return NodeInfo(self.cfg.node, node_resource(self.cfg.node), ray.get_runtime_context().get_node_id(),
                        self.cfg.simulate, self._started_at, tuple(gpus))

    # -- MIG changes --------------------------------------------------------------------------
    def apply_layout(self, gpu: int, target: list[Placement]) -> list[MigOpRecord]:
        """Re-partition one GPU to `target` with the fewest destroy/create ops.

        Returns one record per operation (op, profile, start, duration_s, ok, error, uuid) in the
        order run; stops at the first failure (the caller decides how to roll back).
        """
        from mig.errors import MigError
        from mig.repartition import apply_plan, plan_repartition

        layout = canonical(target)
        ops: list[MigOpRecord] = []

        def on_op(op: str, p: Placement, duration_s: float, error: MigError | None) -> None:
            if self.cfg.simulate and self.cfg.mig_op_delay_s:
                time.sleep(self.cfg.mig_op_delay_s)
                duration_s += self.cfg.mig_op_delay_s
            ops.append(MigOpRecord(self.cfg.node, gpu, op, p.profile, p.start, duration_s, error is None,
                                   str(error or "")))

        with self._lock:
            plan = plan_repartition(self.backend.list_instances(gpu), layout)
            try:
                apply_plan(self.backend, gpu, plan, on_op=on_op)
            except MigError:
                pass  # recorded by on_op; the caller rolls back from the returned records
        return ops

    def acquire_lease(self, gpu: int, gi_id: int, owner: str) -> None:
        """A replica uses (or still uses) the slice; also renews its lease."""
        with self._lock:
            self._leases[(gpu, gi_id, owner)] = time.time()
            self._mark(gpu, gi_id)

    def release_lease(self, gpu: int, gi_id: int, owner: str) -> None:
        with self._lock:
            self._leases.pop((gpu, gi_id, owner), None)
            self._mark(gpu, gi_id)

    def leases(self) -> list[LeaseRecord]:
        now = time.time()
        return [LeaseRecord(g, gi, o, t, now - t > LEASE_TTL_S) for (g, gi, o), t in self._leases.items()]

    def release_leases(self, owners: list[str]) -> list[LeaseRecord]:
        gone = [lease for lease in self.leases() if lease.owner in owners]
        for lease in gone:
            self.release_lease(lease.gpu, lease.gi_id, lease.owner)
        return gone

    def _mark(self, gpu: int, gi_id: int) -> None:
        """Tell a simulated backend whether a process uses the slice (a real driver sees processes)."""
        if not self.cfg.simulate:
            return
        if any(g == gpu and gi == gi_id for g, gi, _ in self._leases):
            self.backend.mark_in_use(gpu, gi_id, "clover")
        else:
            self.backend.release(gpu, gi_id, "clover")

    # -- execution and energy ------------------------------------------------------------------
    def record_batch(self, gpu: int, compute_slices: int, variant_key: str, batch: int, slice_id: str) -> float:
        """A replica ran one batch on a simulated slice (`slice_id` = "profile@start"): record its
        busy time and energy on the GPU's device."""
        dev = self._devices.get(gpu)
        if dev is None:
            return 0.0
        self._busy_seen.setdefault((gpu, slice_id), 0.0)
        return float(dev.execute(compute_slices, variant_key, batch, slice_id))

    def interval_energy(self) -> IntervalEnergy:
        """Joules per GPU and busy seconds per slice since the previous call (one meter window
        per control interval); what the accountant needs to attribute energy to slices."""
        m = self._meter.end_window("interval")
        self._meter.begin_window("interval")
        busy: dict[str, dict[str, float]] = {}
        for (gpu, sid), seen in list(self._busy_seen.items()):
            now = self._devices[gpu].busy_seconds(sid)
            self._busy_seen[(gpu, sid)] = now
            if now > seen:
                busy.setdefault(self.gpu_id(gpu), {})[sid] = now - seen
        # the simulated meter is keyed by our GPU ids already; NVML's by "gpu<index>"
        energy = {k if k in self._gpu_ids() else self.gpu_id(int(k.removeprefix("gpu"))): v
                  for k, v in m.energy_j.items()}
        return IntervalEnergy(energy, busy, m.duration_s, m.estimated, m.source, tuple(m.notes))


def start_agent(cfg: AgentConfig, *, ray_node_id: str | None = None, detached: bool = True) -> Any:
    """Start (or return the running) agent of `cfg.node` as a named actor pinned to a Ray node.

    `ray_node_id` defaults to the node this driver runs on. Needs `ray.init` first.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray_node_id or ray.get_runtime_context().get_node_id()
    actor_cls = ray.remote(NodeAgent)
    handle = actor_cls.options(
        name=agent_name(cfg.node),
        namespace=NAMESPACE,
        lifetime="detached" if detached else None,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=16,  # record_batch from many replicas while a re-partition runs
        max_restarts=-1,  # a killed agent comes back and rebuilds its view from the MIG backend
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(cfg)
    ray.get(handle.ping.remote())
    return handle
