"""Giving back capacity no service needs: the claim the reconciler sends each node agent every tick.

Clover claims, per GPU, the slices of the desired plan that carry a replica, the slices replicas
still run on (a rollout stops them later) and the slices a pending MIG change will destroy:
everything else — a slice the plan leaves idle, a GPU no service needs — is released by the node
agent to the Ray cluster as free `clover_mig_slice` units (gpu_node/free_capacity.py). The claim is sent *before* the GPUs converge, so a slice the
new plan needs back is held before any replica or MIG change lands on it. When other Ray work
holds units Clover wants back, the agent's holding waits (Ray places it when they are freed) and
the reconciler says so once, as a warning; nothing blocks.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from controller.loop.ports import EventSink
from controller.loop.view import FleetView
from controller.planning.plan import Plan
from controller.serving.control_bus import JsonDoc
from controller.serving.replica import ReplicaSpec
from gpu_node.records import Reservation
from mig.types import Layout, Placement, canonical


def claims_of(desired: Plan, fleet: FleetView, replicas: Iterable[ReplicaSpec]) -> dict[str, dict[int, Layout]]:
    """Per node, per GPU index: the slices Clover uses (every GPU whose agent answered, even with none).

    Besides the slices with a replica (planned or still running), the slices a pending MIG change
    will destroy: they must not be lent out between now and the change (an idle slice the new
    layout cuts differently has no replica to hold it)."""
    used: dict[str, set[Placement]] = {g.gpu_id: {s.placement for s in g.slices if s.variant} for g in desired.gpus}
    for r in replicas:
        used.setdefault(r.gpu_id, set()).add(Placement(r.profile, r.start))
    planned = {g.gpu_id: set(g.layout) for g in desired.gpus}
    out: dict[str, dict[int, Layout]] = {}
    for gid, gpu in fleet.gpus.items():
        claim = used.get(gid, set())
        if gid in planned:
            claim = claim | ({Placement(s.profile, s.start) for s in gpu.slices} - planned[gid])
        out.setdefault(gpu.handle.node, {})[gpu.handle.index] = canonical(list(claim))
    return out


def describe_free(r: Reservation) -> str:
    return ", ".join(f"gpu{s.gpu} {s.profile}@{s.start}" for s in r.free) or "none"


# Reconcile ticks a node's holding may stay short before run.log says other work holds the units:
# a placement group just created is pending until Ray places it (seconds on a busy host), which is
# not other work holding anything.
PENDING_TICKS = 3


class CapacityLog:
    """Says in run.log when a node's free capacity changes, and once when Clover waits for units."""

    def __init__(self, events: EventSink) -> None:
        self.events = events
        self._free: dict[str, tuple[tuple[int, int], ...]] = {}  # node -> its free slices last said
        self._pending: dict[str, int] = {}  # node -> reconcile ticks its holding has been short in a row

    def note(self, reservations: dict[str, Reservation]) -> None:
        for node, r in sorted(reservations.items()):
            key = tuple((s.gpu, s.gi_id) for s in r.free)
            if self._free.get(node) != key:
                self._free[node] = key
                held = (f"Clover holds {r.held} of {r.wanted}" if r.advertised else
                        "the node advertises no pool, so nothing is held (not started by `gpu-node setup`)")
                self.events.event("capacity", f"{node}: {r.free_units} {r.resource} units free for other Ray work "
                                              f"({describe_free(r)}); {held}",
                                  node=node, free=[asdict(s) for s in r.free], advertised=r.advertised,
                                  wanted=r.wanted, held=r.held, pending=r.pending)
            self._pending[node] = self._pending.get(node, 0) + 1 if r.pending else 0
            if self._pending[node] == PENDING_TICKS:
                self.events.event("warning", f"{node}: {r.pending} {r.resource} units Clover needs back are held by "
                                             f"other Ray work; its reservation waits for them (Ray places it as "
                                             f"soon as they are freed) and the plan goes ahead",
                                  where=f"capacity {node}")


def capacity_doc(reservations: dict[str, Reservation]) -> JsonDoc:
    """`/v1/status` `free_capacity`: per node, the pool, what Clover holds and the free slices."""
    return {node: {"resource": r.resource, "advertised": r.advertised, "wanted": r.wanted, "held": r.held,
                   "pending": r.pending, "free_units": r.free_units,
                   "free": [{k: v for k, v in asdict(s).items() if k != "env"} for s in r.free]}
            for node, r in sorted(reservations.items())}
