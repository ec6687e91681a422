"""What the reconciler observed: GPUs with their slices, and the replicas that run on them.

Pure value types and the derivations the decisions need (which plan is *actually* running on a
GPU, which replicas are routable). Observed afresh every tick from the node agents and Serve;
never remembered across ticks, so a restarted controller sees exactly what a running one sees.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.planning.plan import GpuPlan, SliceAssignment
from controller.serving.replica import ReplicaSpec
from gpu_node.records import SliceRecord
from mig.types import Placement


@dataclass(frozen=True)
class GpuHandle:
    """Where a plan GPU lives."""

    gpu_id: str
    node: str
    index: int
    gpu_type: str


@dataclass(frozen=True)
class GpuState:
    handle: GpuHandle
    enabled: bool  # MIG on (or MPS daemon up): can be partitioned
    slices: tuple[SliceRecord, ...]

    def slice_at(self, placement: Placement) -> SliceRecord | None:
        return next((s for s in self.slices if (s.profile, s.start) == (placement.profile, placement.start)), None)


@dataclass(frozen=True)
class FleetView:
    gpus: dict[str, GpuState] = field(default_factory=dict)  # gpu_id -> state, agents that answered
    missing_nodes: frozenset[str] = frozenset()  # agents known before that did not answer now
    restarted_nodes: frozenset[str] = frozenset()  # agents that answered with a new start time


RUNNING = "RUNNING"


@dataclass(frozen=True)
class ReplicaState:
    """A slice replica as Serve reports it."""

    spec: ReplicaSpec
    status: str  # Serve application status: RUNNING, DEPLOYING, UNHEALTHY, DEPLOY_FAILED, DELETING

    @property
    def name(self) -> str:
        return self.spec.app_name

    @property
    def running(self) -> bool:
        return self.status == RUNNING


def assignment_of(spec: ReplicaSpec, share: float = 0.0) -> SliceAssignment:
    return SliceAssignment(Placement(spec.profile, spec.start), spec.variant, spec.batch, share, spec.service)


def actual_gpu_plan(gpu: GpuState, replicas: Iterable[ReplicaSpec]) -> GpuPlan:
    """The GPU as it is: one slice entry per replica on it (a slice may briefly hold two during
    a variant swap) and one idle entry per slice without a replica."""
    mine = [r for r in replicas if r.gpu_id == gpu.handle.gpu_id]
    slices: list[SliceAssignment] = []
    for s in gpu.slices:
        on_it = [r for r in mine if (r.profile, r.start) == (s.profile, s.start)]
        slices += [assignment_of(r) for r in on_it] or [SliceAssignment(Placement(s.profile, s.start), None)]
    return GpuPlan(gpu.handle.gpu_id, gpu.handle.gpu_type, tuple(slices))


def broken_replicas(fleet: FleetView, replicas: Iterable[ReplicaState]) -> list[ReplicaState]:
    """Replicas that can never serve again and must go: their deployment failed, or their slice no
    longer exists on a GPU whose agent answered (a GPU instance destroyed under them)."""
    out = []
    for r in replicas:
        if r.status == "DEPLOY_FAILED":
            out.append(r)
            continue
        gpu = fleet.gpus.get(r.spec.gpu_id)
        if gpu is None:
            continue  # agent not answering: we cannot tell, keep it
        s = gpu.slice_at(Placement(r.spec.profile, r.spec.start))
        if s is None or s.gi_id != r.spec.gi_id:
            out.append(r)
    return out
