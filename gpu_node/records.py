"""Typed records a node agent returns across the Ray boundary (pickled dataclasses, not dicts).

They are the whole contract between a GPU node and the controller: what the node has (`NodeInfo`
→ `GpuRecord` → `SliceRecord`), what a re-partition did (`MigOpRecord`), who holds a slice
(`LeaseRecord`), what the GPUs and their host consumed (`IntervalEnergy`, `HostReading`) and the
capacity no service needs (`FreeSlice`, `Reservation`). Frozen, so a record read once is a
snapshot, never a live view.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mig.leases import LeaseRecord  # defined beside the lease book that makes them

__all__ = ["FreeSlice", "GpuRecord", "HostReading", "IntervalEnergy", "LeaseRecord", "MigOpRecord", "NodeInfo",
           "Reservation", "SliceRecord"]


@dataclass(frozen=True)
class SliceRecord:
    """One partition of a GPU: a MIG instance, or an MPS share on a GPU without MIG."""

    gi_id: int  # GPU-instance id (MIG) or the share's id on its GPU (MPS)
    profile: str  # "3g.40gb": the same names for MIG and MPS, so the planner is unchanged
    start: int  # placement slot
    size: int  # memory slices
    uuid: str  # MIG device UUID, or the GPU UUID for an MPS share
    env: dict[str, str] = field(default_factory=dict)  # what a process on this slice must see

    @property
    def slice_id(self) -> str:
        """Unique within its GPU: "profile@start" (the accountant's and the replica's key)."""
        return f"{self.profile}@{self.start}"


@dataclass(frozen=True)
class GpuRecord:
    index: int  # on its node
    gpu_id: str  # cluster-wide id "<node>/gpu<index>"
    uuid: str
    name: str
    gpu_type: str
    partitioning: str  # "mig" or "mps"
    enabled: bool  # MIG mode on / MPS control daemon running: the GPU can be partitioned
    slices: tuple[SliceRecord, ...] = ()


@dataclass(frozen=True)
class NodeInfo:
    node: str
    resource: str  # custom Ray resource replicas of this node request
    ray_node_id: str
    simulated: bool
    started_at: float  # wall-clock start of this agent process: a new value means it restarted
    gpus: tuple[GpuRecord, ...] = ()


@dataclass(frozen=True)
class MigOpRecord:
    """One destroy/create the agent ran, in the order it ran them."""

    node: str
    gpu: int
    op: str  # "create" or "destroy"
    profile: str
    start: int
    duration_s: float
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class HostReading:
    """CPU package and DRAM energy (RAPL) of the machine an agent runs on, over the same interval
    as its GPUs' reading: the emissions CSV's cpu_energy/ram_energy, apart from the GPUs' energy.

    `machine` names the host, so agents sharing one machine (several simulated nodes, tests)
    have its energy counted once. An empty `energy_j` means RAPL was not readable; `notes` say why.
    """

    machine: str
    energy_j: dict[str, float]  # RAPL zone -> joules: "cpu0" (package), "cpu0-dram" (its DRAM)
    estimated: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntervalEnergy:
    """Energy per GPU and busy seconds per slice since the agent's previous reading."""

    energy_j: dict[str, float]  # gpu_id -> joules
    busy_s: dict[str, dict[str, float]]  # gpu_id -> slice_id -> seconds
    duration_s: float
    estimated: bool
    source: str
    notes: tuple[str, ...] = ()
    # None: the node reads no host energy apart, because its device *is* the host CPU (its RAPL
    # energy is already `energy_j`; gpu_node/host_cpu.py), or the agent predates host readings.
    host: HostReading | None = None


@dataclass(frozen=True)
class FreeSlice:
    """A slice no planned replica uses and no live lease holds: other Ray work may run on it."""

    gpu: int  # index on its node
    gi_id: int
    profile: str
    start: int
    compute_slices: int  # units of the node's `clover_mig_slice` pool it stands for
    uuid: str  # MIG device UUID (real GPUs), or the simulated one
    env: dict[str, str] = field(default_factory=dict)  # what a process on this slice must see


@dataclass(frozen=True)
class Reservation:
    """How much of the node's `clover_mig_slice` pool Clover holds back, and what it leaves free.

    `held` units are placed (other work cannot take them); `pending` ones wait because other Ray
    work holds them now: Ray places them as soon as that work ends. `advertised` is 0 where the
    node was started without a pool (nothing is held then; `free` is still reported)."""

    resource: str
    advertised: int  # units the node advertised at `ray start`
    wanted: int  # units Clover needs now: every unit not in a free slice
    held: int
    pending: int
    free: tuple[FreeSlice, ...] = ()

    @property
    def free_units(self) -> int:
        return sum(s.compute_slices for s in self.free)
