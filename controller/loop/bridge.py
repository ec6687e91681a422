"""Bridging a GPU step that waits for capacity no other step will add (pure: no I/O).

A step that would take away capacity the other replicas cannot cover waits (rollout.py). When
nothing else moves, waiting changes nothing: the only replica of a service sits on the GPU being
re-partitioned, or the plan puts all of a service's capacity on that GPU. A bridge adds the
missing capacity first, make-before-break, from what is free now, cheapest first:
 0. a replica the desired plan wants anyway, on a slice that exists idle or fits beside the
    slices that exist (the changing GPU's own new slices included: half of its change made
    first) — permanent, it never has to go again;
 1. a temporary replica on an idle slice of another GPU (no MIG operation);
 2. a temporary replica on a new slice in another GPU's free MIG space.
Temporary replicas are not in the desired plan, so the reconciler removes them (and their slice)
once the step is done, through the usual capacity-checked step of their GPU: the bridge needs no
memory of its own and survives a controller restart like everything else.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from controller.loop.view import GpuState, actual_gpu_plan
from controller.planning.plan import Plan, SliceAssignment, slice_key
from controller.serving.replica import ReplicaSpec
from mig.errors import PlacementError
from mig.placement import check_addition, compute_slices_of, first_free_start, main_profile_names
from mig.types import Placement

# (gpu type, placement, service) -> replicas of the service that could run there, with their capacity (req/s)
Offers = Callable[[str, Placement, str], Sequence[tuple[SliceAssignment, float]]]
# (gpu type, replica) -> its capacity (req/s)
Capacity = Callable[[str, SliceAssignment], float]


@dataclass(frozen=True)
class Room:
    """One GPU as a bridge may use it."""

    gpu_id: str
    gpu_type: str
    slices: tuple[Placement, ...]  # the instances that exist now
    idle: tuple[Placement, ...]  # those of them no replica uses
    desired: tuple[SliceAssignment, ...]  # replicas its desired plan wants that do not run yet
    changing: bool = False  # the waiting GPU: its step re-partitions, so only its desired slices may be used


@dataclass(frozen=True)
class BridgeSlice:
    gpu_id: str
    assignment: SliceAssignment  # names its service
    create: bool  # the slice must be created first
    permanent: bool  # the desired plan wants it (started early), not a temporary replica


def rooms_of(gpus: Mapping[str, GpuState], specs: Iterable[ReplicaSpec], desired: Plan, changing: str) -> list[Room]:
    """The observed GPUs as rooms for a bridge of the step of GPU `changing`."""
    specs = list(specs)
    wanted = {g.gpu_id: g for g in desired.gpus}
    out = []
    for gid, gpu in sorted(gpus.items()):
        if not gpu.enabled:
            continue
        actual = actual_gpu_plan(gpu, specs)
        running = {slice_key(s) for s in actual.slices if s.variant}
        g = wanted.get(gid)
        todo = tuple(replace(s, service=s.service or desired.service) for s in (g.slices if g else ())
                     if s.variant and slice_key(s) not in running)
        out.append(Room(gid, gpu.handle.gpu_type, tuple(Placement(x.profile, x.start) for x in gpu.slices),
                        tuple(s.placement for s in actual.slices if s.variant is None), todo, gid == changing))
    return out


def describe_bridge(bridge: Iterable[BridgeSlice]) -> str:
    """`n1/gpu0 1g.10gb@4:albert/base (new slice)`, one per replica, for run.log lines."""
    return ", ".join(f"{b.gpu_id} {b.assignment.placement.profile}@{b.assignment.placement.start}:"
                     f"{b.assignment.service}/{b.assignment.variant}"
                     + (" (new slice)" if b.create else "") + (" (planned)" if b.permanent else "")
                     for b in bridge)


@dataclass
class _Free:
    """What is still free on one GPU while the bridge is being chosen."""

    room: Room
    slices: list[Placement]
    idle: list[Placement]
    desired: list[SliceAssignment]

    def fits(self, p: Placement) -> bool:
        try:
            check_addition(self.room.gpu_type, self.slices, p)
        except PlacementError:
            return False
        return True

    def take(self, b: BridgeSlice) -> None:
        p = b.assignment.placement
        if b.create:
            self.slices.append(p)
        else:
            self.idle.remove(p)
        if b.permanent:
            self.desired.remove(b.assignment)


def plan_bridge(missing: Mapping[str, float], rooms: Sequence[Room], offers: Offers,
                capacity: Capacity) -> tuple[BridgeSlice, ...] | None:
    """Replicas that add at least `missing` (req/s by service) from free capacity, or None when
    the rooms cannot. Greedy: the cheapest kind first (see the module doc); within a kind the
    smallest slice that covers what is still missing, else the one carrying most (fewest replicas)."""
    need = {s: m for s, m in missing.items() if m > 0}
    free = [_Free(r, list(r.slices), list(r.idle), list(r.desired)) for r in rooms]
    chosen: list[BridgeSlice] = []
    while need:
        options = [(kind, b, cap, f) for f in free for kind, b, cap in _options(f, need, offers, capacity)]
        if not options:
            return None
        _, b, cap, f = min(options, key=lambda o: _preference(o[0], o[1], o[2], need))
        f.take(b)
        chosen.append(b)
        service = b.assignment.service
        need[service] -= cap
        if need[service] <= 1e-9:
            del need[service]
    return tuple(chosen)


def _preference(kind: int, b: BridgeSlice, cap: float, need: Mapping[str, float]) -> tuple:
    size = compute_slices_of(b.assignment.placement.profile)
    if cap >= need[b.assignment.service]:
        return kind, 0, size, -cap
    return kind, 1, -cap, size


def _options(f: _Free, need: Mapping[str, float], offers: Offers,
             capacity: Capacity) -> list[tuple[int, BridgeSlice, float]]:
    """(kind, bridge slice, capacity) of everything one GPU could add now for the services in need."""
    t = f.room.gpu_type
    out = []
    for a in f.desired:
        if a.service in need and (a.placement in f.idle or f.fits(a.placement)):
            out.append((0, BridgeSlice(f.room.gpu_id, a, a.placement not in f.idle, True), capacity(t, a)))
    if f.room.changing:
        return [o for o in out if o[2] > 0]
    new = [Placement(name, start) for name in main_profile_names(t)
           if (start := first_free_start(t, f.slices, name)) is not None]
    for kind, places, create in ((1, f.idle, False), (2, new, True)):
        for p in places:
            for service in need:
                out += [(kind, BridgeSlice(f.room.gpu_id, a, create, False), cap) for a, cap in offers(t, p, service)]
    return [o for o in out if o[2] > 0]
