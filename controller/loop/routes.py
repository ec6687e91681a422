"""Which replicas get traffic now, and publishing that as a versioned routing table.

The controller keeps a `RouteBook` — replicas serving (with shares), warming (started, share 0)
and draining (no new requests, in-flight ones finish) — and turns it into a `RoutingTable` that
every ingress replica pulls from the control bus. The book is rebuilt from what runs after a
restart (every running replica serves), so it needs no persistence; the table is republished on
every reconcile tick when it differs from the last one, which also heals a restarted bus.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.loop.ports import EventSink, RouteBus
from controller.loop.service_model import Workload
from controller.loop.view import assignment_of
from controller.serving.replica import ReplicaSpec
from controller.serving.router import RouteEntry, RoutingTable

ACK_TIMEOUT_S = 5.0  # ingress replicas poll every 0.25 s; this bounds a stuck one


@dataclass
class RouteBook:
    specs: dict[str, ReplicaSpec] = field(default_factory=dict)  # every routed replica, by name
    warming: set[str] = field(default_factory=set)
    draining: set[str] = field(default_factory=set)

    def serving(self) -> list[ReplicaSpec]:
        return [s for n, s in self.specs.items() if n not in self.warming and n not in self.draining]

    def add(self, spec: ReplicaSpec, warming: bool = False) -> None:
        self.specs[spec.app_name] = spec
        self.draining.discard(spec.app_name)
        if warming:
            self.warming.add(spec.app_name)

    def serve(self, names: list[str]) -> None:
        self.warming.difference_update(names)

    def drain(self, names: list[str]) -> None:
        self.draining.update(n for n in names if n in self.specs)

    def remove(self, names: list[str]) -> None:
        for n in names:
            self.specs.pop(n, None)
            self.warming.discard(n)
            self.draining.discard(n)


def build_table(book: RouteBook, workload: Workload, rates: Mapping[str, float], carbon_intensity: float,
                version: int) -> RoutingTable:
    """Per service, shares over its serving replicas (optimal at its rate, else by SLA capacity),
    share 0 for warming and draining ones, and each replica's queue bound (the ingress replicas
    split it)."""
    share: dict[str, float] = {}
    for name in workload.names:
        serving = sorted((s for s in book.serving() if s.service == name), key=lambda s: s.app_name)
        model = workload.model(name)
        shares = model.shares([(s.gpu_type, assignment_of(s)) for s in serving], rates.get(name, 0.0),
                              carbon_intensity)
        share.update({s.app_name: x for s, x in zip(serving, shares)})
    entries = tuple(
        RouteEntry(n, s.service, s.variant, share.get(n, 0.0), workload.model(s.service).queue_bound(s),
                   n in book.draining)
        for n, s in sorted(book.specs.items())
    )
    return RoutingTable(version, entries)


class Routes:
    """Publishes the book through the bus and waits for ingress replicas to route by it."""

    def __init__(self, bus: RouteBus, events: EventSink) -> None:
        self.bus = bus
        self.events = events
        self.book = RouteBook()
        self.table: RoutingTable | None = None

    def publish(self, workload: Workload, rates: Mapping[str, float], carbon_intensity: float, *,
                wait: bool = False) -> None:
        """Publish the book if it changed (always re-send the current table: the bus may have
        restarted); with `wait`, return once every live ingress routes by it (or after a bound)."""
        table = build_table(self.book, workload, rates, carbon_intensity, time.time_ns())
        if table.same_routes(self.table):
            assert self.table is not None
            self.bus.publish(self.table)
            return
        self.table = table
        self.bus.publish(table)
        self.events.event("shares", f"traffic over {sum(1 for e in table.entries if e.share > 0)} replicas",
                          shares={e.name: round(e.share, 4) for e in table.entries}, version=table.version)
        if wait:
            self.wait_acknowledged()

    def wait_acknowledged(self, timeout_s: float = ACK_TIMEOUT_S) -> bool:
        if self.table is None:
            return True
        deadline = time.monotonic() + timeout_s
        while not self.bus.acknowledged(self.table.version):
            if time.monotonic() > deadline:
                self.events.event("warning", f"ingress replicas did not confirm routing table {self.table.version} "
                                             f"within {timeout_s:.0f}s; going on", where="routes")
                return False
            time.sleep(0.05)
        return True
