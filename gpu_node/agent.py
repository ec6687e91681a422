"""The node agent: one named Ray actor per GPU node that owns the node's slices, leases and meters.

Why an actor: partition changes and energy counters are per *node* (nvidia-smi, the MPS daemon
and NVML act on local devices), while the controller runs elsewhere. The agent is named
(`clover-agent-<node>` in namespace "clover") so the controller finds it with `ray.get_actor`,
pinned to its node (NodeAffinitySchedulingStrategy) so its nvidia-smi calls hit the right GPUs,
detached so it outlives the command that started it, and restartable (`max_restarts=-1`): Ray
brings it back after a crash. It keeps no state of its own that a restart could lose: `__init__`
rebuilds its whole view from the node's devices (gpu_node/devices.py: the MIG/MPS state or the
driver, the lease file), so a restarted agent answers correctly at once; `info().started_at`
tells the controller it restarted. Every replica of the node is pinned there too through the
custom resource `clover_node_<node>` the node advertises.

The agent also gives back what no service needs (gpu_node/free_capacity.py): the controller
claims the slices its plan and its running replicas use (`claim`, every reconcile tick, kept in
`claims.json` so a restarted agent holds the same), and the agent holds that part of the node's
`clover_mig_slice` pool with placement groups, re-sized whenever the claim, the layout or the
leases change; the rest, and the slices it stands for (`free_slices`), are other Ray work's.

Every method returns the typed records of gpu_node/records.py, never dicts.
"""
from __future__ import annotations

import platform
import threading
import time
from typing import TYPE_CHECKING, Any

from configs.cluster import AGENT_PREFIX, NAMESPACE, SLICE_RESOURCE, agent_name, node_resource
from gpu_node.devices import AgentConfig, NodeDevices, build_devices
from gpu_node.free_capacity import (
    CLAIMS_FILE,
    CLAIMS_VERSION,
    decode_claims,
    encode_claims,
    free_slice,
    gpu_units,
    is_free,
    ray_holder,
    replace_claims,
)
from gpu_node.meters.base import Measurement, Meter
from gpu_node.records import (
    FreeSlice,
    GpuRecord,
    HostReading,
    IntervalEnergy,
    LeaseRecord,
    MigOpRecord,
    NodeInfo,
    Reservation,
    SliceRecord,
)
from mig.errors import MigError
from mig.repartition import apply_plan, plan_repartition
from mig.state_file import StateFile
from mig.types import GpuInfo, Layout, Placement, canonical

if TYPE_CHECKING:
    from ray.actor import ActorHandle

__all__ = ["AgentConfig", "NodeAgent", "find_agents", "start_agent"]

WINDOW = "interval"  # the meter window between two interval_energy() calls


def _ray_context() -> tuple[str, str]:
    """(Ray node id, Ray session name) of this process; empty outside Ray (unit tests)."""
    import ray

    if not ray.is_initialized():
        return "", ""
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_session_name()


class NodeAgent:
    """The agent's logic; `start_agent` wraps it as a named, restartable Ray actor."""

    def __init__(self, cfg: AgentConfig, devices: NodeDevices | None = None) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self._ray_node_id, session = _ray_context()
        self._lock = threading.Lock()  # one re-partition at a time
        self._hold_lock = threading.Lock()  # one re-size of the held units at a time
        self.devices = devices or build_devices(cfg, session=session)
        leases = self.devices.leases.path  # the claim is kept beside the leases (in memory where they are)
        self._claims = StateFile(leases.with_name(CLAIMS_FILE) if leases else None, version=CLAIMS_VERSION,
                                 what="slice claim", decode=decode_claims, encode=encode_claims)
        self._holder = ray_holder(cfg.node, self._ray_node_id)  # None outside Ray or without a pool
        if self._holder is not None:
            self.reservation()  # a restarted agent re-sizes what it adopted to the claim it kept
        self.machine = platform.node()  # names the host's energy, counted once per machine
        self.devices.meter.begin_window(WINDOW)
        if self.devices.host_meter is not None:
            self.devices.host_meter.begin_window(WINDOW)

    def gpu_id(self, index: int) -> str:
        return f"{self.cfg.node}/gpu{index}"

    # -- inspection --------------------------------------------------------------------------
    def ping(self) -> str:
        return self.cfg.node

    def info(self) -> NodeInfo:
        """The node, its GPUs and their current slices, read from the devices now."""
        backend = self.devices.backend
        gpus = []
        for g in backend.list_gpus():
            slices = tuple(SliceRecord(i.gi_id, i.profile, i.start, i.size, i.uuid, backend.slice_env(g, i))
                           for i in backend.list_instances(g.index)) if g.enabled else ()
            gpus.append(GpuRecord(g.index, self.gpu_id(g.index), g.uuid, g.name, g.gpu_type, g.partitioning,
                                  g.enabled, slices))
        return NodeInfo(self.cfg.node, node_resource(self.cfg.node), self._ray_node_id, self.cfg.simulate,
                        self.started_at, tuple(gpus))

    # -- partition changes ----------------------------------------------------------------------
    def apply_layout(self, gpu: int, layout: list[Placement]) -> list[MigOpRecord]:
        """Re-partition one GPU to `layout` with the fewest destroy/create operations.

        Returns one record per operation in the order run; stops at the first failure (the
        caller decides how to roll back). Leases of destroyed slices go with them (they can
        only have been stale: a live one makes the destroy fail).
        """
        ops: list[MigOpRecord] = []
        backend = self.devices.backend

        def on_op(op: str, p: Placement, duration_s: float, error: MigError | None) -> None:
            if self.cfg.mig_op_delay_s:
                time.sleep(self.cfg.mig_op_delay_s)
                duration_s += self.cfg.mig_op_delay_s
            ops.append(MigOpRecord(self.cfg.node, gpu, op, p.profile, p.start, duration_s, error is None,
                                   str(error or "")))
            if op == "destroy" and error is None:
                self.devices.leases.forget_slice(gpu, gi_of[p])

        with self._lock:
            current = backend.list_instances(gpu)
            gi_of = {i.placement: i.gi_id for i in current}
            try:
                apply_plan(backend, gpu, plan_repartition(current, canonical(layout)), on_op=on_op)
            except MigError:
                pass  # recorded by on_op; the caller rolls back from the returned records
        self.reservation()
        return ops

    # -- leases ---------------------------------------------------------------------------------
    def acquire_lease(self, gpu: int, gi_id: int, owner: str) -> None:
        """Take or renew `owner`'s lease on a slice (replicas call it every RENEW_EVERY_S)."""
        leases = self.devices.leases
        held = {(x.gpu, x.gi_id) for x in leases.leases() if not x.stale}
        if not any((x.gpu, x.gi_id, x.owner) == (gpu, gi_id, owner) for x in leases.leases()):
            have = [i.gi_id for i in self.devices.backend.list_instances(gpu)]  # new lease: the slice must exist
            if gi_id not in have:
                raise MigError(f"GPU {gpu} of node {self.cfg.node} has no slice GI {gi_id} for {owner} to lease "
                               f"(it has {have})")
        leases.acquire(gpu, gi_id, owner)
        if (gpu, gi_id) not in held:  # a slice newly in use is no longer free
            self.reservation()

    def renew_lease(self, gpu: int, gi_id: int, owner: str) -> bool:
        """Renew a lease that exists (a borrower's); False when it lapsed and was dropped."""
        return self.devices.leases.renew(gpu, gi_id, owner)

    def release_lease(self, gpu: int, gi_id: int, owner: str) -> None:
        self.devices.leases.release(gpu, gi_id, owner)
        self.reservation()

    def leases(self) -> list[LeaseRecord]:
        return self.devices.leases.leases()

    def release_leases(self, owners: list[str]) -> list[LeaseRecord]:
        """Drop the leases of replicas that no longer exist; returns what was dropped."""
        return self._released(self.devices.leases.release_owners(owners))

    def release_stale(self) -> list[LeaseRecord]:
        return self._released(self.devices.leases.release_stale())

    def _released(self, gone: list[LeaseRecord]) -> list[LeaseRecord]:
        if gone:
            self.reservation()
        return gone

    # -- capacity no service needs (gpu_node/free_capacity.py) ----------------------------------------
    def claim(self, claims: dict[int, Layout]) -> Reservation:
        """The controller's claim: per GPU index, the slices its plan and its running replicas use
        (the whole claim, replacing the previous one). Returns the re-sized reservation."""
        with self._claims.transaction() as state:
            replace_claims(state, claims)
        return self.reservation()

    def free_slices(self) -> list[FreeSlice]:
        """Slices that no claimed slice overlaps and no live lease holds: other Ray work may use them."""
        return self._free(self.devices.backend.list_gpus())

    def borrow_slice(self, compute_slices: int, owner: str) -> FreeSlice | None:
        """Lease the smallest free slice with at least `compute_slices` to `owner` (other Ray work,
        gpu_node/free_capacity.py `borrowed_slice`); None when none is free. One borrower at a
        time, and none while a re-partition runs (the slice handed out is the one leased); the
        owner renews with `renew_lease`."""
        with self._lock:
            fits = [s for s in self.free_slices() if s.compute_slices >= compute_slices]
            if not fits:
                return None
            chosen = min(fits, key=lambda s: (s.compute_slices, s.gpu, s.start))
            self.acquire_lease(chosen.gpu, chosen.gi_id, owner)
            return chosen

    def _free(self, gpus: list[GpuInfo]) -> list[FreeSlice]:
        backend = self.devices.backend
        with self._claims.transaction() as state:
            claims = dict(state)
        leased = {(x.gpu, x.gi_id) for x in self.devices.leases.leases() if not x.stale}
        return [free_slice(g, i, backend.slice_env(g, i)) for g in gpus if g.enabled
                for i in backend.list_instances(g.index)
                if is_free(g, i, claims.get(g.index, ()), {gi for gpu, gi in leased if gpu == g.index})]

    def reservation(self) -> Reservation:
        """Hold every unit of the pool not in a free slice (asynchronously: units other work holds
        now are *pending*, placed by Ray once freed), and say where things stand."""
        gpus = self.devices.backend.list_gpus()
        free = tuple(self._free(gpus))
        wanted = max(0, sum(gpu_units(g) for g in gpus) - sum(s.compute_slices for s in free))
        if self._holder is None:
            return Reservation(SLICE_RESOURCE, 0, wanted, 0, 0, free)
        with self._hold_lock:
            held, pending = self._holder.hold(wanted)
        return Reservation(SLICE_RESOURCE, self._holder.advertised, wanted, held, pending, free)

    # -- execution and energy ------------------------------------------------------------------
    def record_batch(self, gpu: int, compute_slices: int, variant_key: str, batch: int, slice_id: str) -> float:
        """A replica starts one batch on slice `slice_id` ("profile@start"); on a simulated GPU
        this runs it on the model and returns its duration in seconds (0.0 on a real GPU)."""
        return self.devices.busy.record_batch(gpu, compute_slices, variant_key, batch, slice_id)

    def record_busy(self, gpu: int, slice_id: str, seconds: float) -> None:
        """A replica finished one batch on slice `slice_id` after `seconds` of measured device
        time; counted in `interval_energy().busy_s` on real GPUs (ignored on simulated ones)."""
        self.devices.busy.record_busy(gpu, slice_id, seconds)

    def interval_energy(self) -> IntervalEnergy:
        """Joules per GPU and busy seconds per slice since the previous call (one meter window
        per control interval); what the accountant needs to attribute energy to slices. On a GPU
        node also the host's CPU package and DRAM joules over the same window (`host`)."""
        m = _restart_window(self.devices.meter)
        energy = {self.gpu_id(int(dev.removeprefix("gpu"))): j for dev, j in m.energy_j.items()}
        busy = {self.gpu_id(gpu): slices for gpu, slices in self.devices.busy.take().items()}
        host = None
        if self.devices.host_meter is not None:
            h = _restart_window(self.devices.host_meter)
            host = HostReading(self.machine, h.energy_j, h.estimated, h.notes)
        return IntervalEnergy(energy, busy, m.duration_s, m.estimated, m.source, tuple(m.notes), host)


def _restart_window(meter: Meter) -> Measurement:
    """End the interval window and open the next one at once, so no energy falls between two."""
    m = meter.end_window(WINDOW)
    meter.begin_window(WINDOW)
    return m


def find_agents() -> dict[str, ActorHandle]:
    """Every node agent registered in the cluster now, by node name."""
    import ray

    out = {}
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["namespace"] == NAMESPACE and a["name"].startswith(AGENT_PREFIX):
            try:
                out[a["name"].removeprefix(AGENT_PREFIX)] = ray.get_actor(a["name"], namespace=NAMESPACE)
            except ValueError:
                continue  # gone between the listing and the lookup
    return out


def start_agent(cfg: AgentConfig, *, ray_node_id: str | None = None, detached: bool = True) -> Any:
    """Start (or return the running) agent of `cfg.node` as a named actor pinned to a Ray node.

    Restartable either way (`max_restarts=-1`); `detached=False` ties it to this driver's job
    (`controller demo`, tests). `ray_node_id` defaults to the node this driver runs on. Needs
    `ray.init` first.
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
        max_restarts=-1,
        num_cpus=0,
        max_concurrency=16,  # record_batch from many replicas while a re-partition runs
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(cfg)
    ray.get(handle.ping.remote())
    return handle
