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

from configs.cluster import AGENT_PREFIX, NAMESPACE, agent_name, node_resource
from mig.types import GpuInstance, Placement, canonical


@dataclass(frozen=True)
class AgentConfig:
    """How to build a node agent (also what `gpu-node setup` passes)."""

    node: str
    simulate: bool = True
    gpus: int = 2
    gpu_type: str = "H100-80GB"
    state_dir: str | None = None
    mig_op_delay_s: float = 0.0  # simulated nvidia-smi latency per create/destroy


def _slice_json(inst: GpuInstance) -> dict[str, Any]:
    return {"gi_id": inst.gi_id, "profile": inst.profile, "start": inst.start, "size": inst.size,
            "uuid": inst.uuid}


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

    def info(self) -> dict[str, Any]:
        """The node, its GPUs and their current slices (MIG UUID, profile, placement)."""
        import ray

        gpus = []
        for g in self.backend.list_gpus():
            slices = [_slice_json(i) for i in self.backend.list_instances(g.index)] if g.mig_enabled else []
            gpus.append({"index": g.index, "gpu_id": self.gpu_id(g.index), "uuid": g.uuid, "name": g.name,
                         "gpu_type": g.gpu_type, "mig_enabled": g.mig_enabled, "slices": slices})
        return {"node": self.cfg.node, "resource": node_resource(self.cfg.node),
                "ray_node_id": ray.get_runtime_context().get_node_id(), "simulated": self.cfg.simulate,
                "gpus": gpus}

    # -- MIG changes --------------------------------------------------------------------------
    def apply_layout(self, gpu: int, target: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Re-partition one GPU to `target` ([{profile, start}]) with the fewest destroy/create ops.

        Returns one record per operation (op, profile, start, duration_s, ok, error, uuid) in the
        order run; stops at the first failure (the caller decides how to roll back).
        """
        from mig.errors import MigError
        from mig.repartition import apply_plan, plan_repartition

        layout = canonical([Placement.from_json(p) for p in target])
        ops: list[dict[str, Any]] = []

        def on_op(op: str, p: Placement, duration_s: float, error: MigError | None) -> None:
            if self.cfg.simulate and self.cfg.mig_op_delay_s:
                time.sleep(self.cfg.mig_op_delay_s)
                duration_s += self.cfg.mig_op_delay_s
            ops.append({"node": self.cfg.node, "gpu": gpu, "op": op, "profile": p.profile, "start": p.start,
                        "duration_s": duration_s, "ok": error is None, "error": str(error or "")})

        with self._lock:
            plan = plan_repartition(self.backend.list_instances(gpu), layout)
            try:
                apply_plan(self.backend, gpu, plan, on_op=on_op)
            except MigError:
                pass  # recorded by on_op; the caller rolls back from the returned records
        return ops

    def mark_in_use(self, gpu: int, gi_id: int, owner: str) -> None:
        """Tell a simulated backend a replica uses the slice (a real driver sees the process)."""
        if hasattr(self.backend, "mark_in_use"):
            self.backend.mark_in_use(gpu, gi_id, owner)

    def release(self, gpu: int, gi_id: int, owner: str) -> None:
        if hasattr(self.backend, "release"):
            self.backend.release(gpu, gi_id, owner)

    # -- execution and energy ------------------------------------------------------------------
    def record_batch(self, gpu: int, compute_slices: int, variant_key: str, batch: int, slice_id: str) -> float:
        """A replica ran one batch on a simulated slice (`slice_id` = "profile@start"): record its
        busy time and energy on the GPU's device."""
        dev = self._devices.get(gpu)
        if dev is None:
            return 0.0
        self._busy_seen.setdefault((gpu, slice_id), 0.0)
        return float(dev.execute(compute_slices, variant_key, batch, slice_id))

    def interval_energy(self) -> dict[str, Any]:
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
        return {"energy_j": energy, "busy_s": busy, "duration_s": m.duration_s,
                "estimated": m.estimated, "notes": list(m.notes), "source": m.source}


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
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(cfg)
    ray.get(handle.ping.remote())
    return handle


def find_agents() -> dict[str, Any]:
    """Every live node agent in the cluster, by node name."""
    import ray

    out = {}
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["namespace"] == NAMESPACE and a["name"].startswith(AGENT_PREFIX):
            out[a["name"].removeprefix(AGENT_PREFIX)] = ray.get_actor(a["name"], namespace=NAMESPACE)
    return out
