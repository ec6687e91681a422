"""The loop's collaborators, as small typed protocols.

The rollout, the reconciler and the interval accounting only talk to these; the Ray/Serve
adapters (controller/loop/fleet.py, controller/loop/replicas.py, the control bus client) implement
them for a real cluster, and the unit tests implement them in-process (tests/loop_fakes.py), so
make-before-break, rollback and node loss are tested without Ray.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.accounting.attribution import HostEnergy
from controller.loop.view import FleetView, GpuHandle, ReplicaState
from controller.serving.counters import ServingCounters
from controller.serving.replica import ReplicaSpec
from controller.serving.router import RoutingTable
from gpu_node.records import HostReading, IntervalEnergy, LeaseRecord, MigOpRecord, Reservation
from mig.types import Layout


class NodeLostError(RuntimeError):
    """A node agent died (or vanished) while the loop was acting through it."""


@dataclass(frozen=True)
class FleetEnergy:
    """Energy of every GPU whose agent answered, and of their hosts, since the previous reading."""

    energy_j: dict[str, float] = field(default_factory=dict)  # gpu_id -> J
    busy_s: dict[str, dict[str, float]] = field(default_factory=dict)  # gpu_id -> slice_id -> s
    estimated: bool = False  # some GPU's reading is partial (agent restarted) or modelled
    notes: tuple[str, ...] = ()
    host: HostEnergy = field(default_factory=HostEnergy)  # the hosts' CPU/DRAM; its own `estimated` and notes

    @classmethod
    def of(cls, readings: Mapping[str, IntervalEnergy]) -> FleetEnergy:
        """The node agents' readings (node -> reading) summed: GPUs by id, hosts once per machine."""
        energy: dict[str, float] = {}
        busy: dict[str, dict[str, float]] = {}
        notes: list[str] = []
        hosts: dict[str, HostReading] = {}
        for e in readings.values():
            energy.update(e.energy_j)
            busy.update(e.busy_s)
            notes += e.notes
            if e.host is not None:
                hosts.setdefault(e.host.machine, e.host)
        return cls(energy, busy, any(e.estimated for e in readings.values()), tuple(notes),
                   host_energy(hosts.values()))


def host_energy(hosts: Iterable[HostReading]) -> HostEnergy:
    """The hosts' RAPL readings (one per machine) as the accountant's `HostEnergy`: estimated, with
    the reason, where a host's RAPL could not be read; 0 and not estimated when no node reads one
    (CPU nodes: their CPU's energy is the device's)."""
    hosts = list(hosts)
    if not hosts:
        return HostEnergy()
    zones = {f"{h.machine}/{zone}": j for h in hosts for zone, j in h.energy_j.items()}
    return HostEnergy.from_rapl(zones, estimated=any(h.estimated for h in hosts),
                                notes=[f"host {h.machine}: {n}" for h in hosts for n in h.notes])


class Fleet(Protocol):
    """The GPU nodes, through their agents (looked up by name on every call)."""

    def observe(self) -> FleetView: ...

    def apply_layout(self, gpu: GpuHandle, layout: Layout) -> list[MigOpRecord]: ...

    def interval_energy(self) -> FleetEnergy: ...

    def leases(self) -> dict[str, list[LeaseRecord]]: ...  # node -> leases

    def release_leases(self, node: str, owners: list[str]) -> list[LeaseRecord]: ...

    def claim(self, claims: Mapping[str, Mapping[int, Layout]]) -> dict[str, Reservation]: ...
    # node -> GPU index -> the slices Clover uses; returns each answering node's reservation


class ReplicaRuntime(Protocol):
    """Slice replicas as Serve applications."""

    def list(self) -> dict[str, ReplicaState]: ...  # app name -> state, replicas whose spec is known

    def statuses(self) -> dict[str, str]: ...  # app name -> Serve status, every slice-replica application

    def deploy(self, specs: list[ReplicaSpec], timeout_s: float) -> None: ...  # raises when one does not come up

    def stop(self, names: list[str]) -> None: ...

    def inflight(self, names: list[str]) -> int: ...  # requests inside those replicas now


class RouteBus(Protocol):
    """Where routing tables go and ingress replicas report."""

    def publish(self, table: RoutingTable) -> None: ...

    def acknowledged(self, version: int) -> bool: ...  # every live ingress replica routes by `version`

    def counters(self) -> dict[str, ServingCounters]: ...  # ingress id -> cumulative counters


class EventSink(Protocol):
    """run.log / run.jsonl (controller/accounting/runlog.py)."""

    def event(self, kind: str, message: str, **fields: object) -> None: ...
