"""Routing logic of the ingress: which slice replica gets the next request.

Pure logic, no Ray, no I/O, so it is tested directly and the ingress only wires it to handles.
Why these rules:
- Routes are declared, not edited: the controller publishes a versioned `RoutingTable` (every
  replica of every service with its share, queue bound and draining flag) and every ingress
  replica `sync`s its routers to it. A restarted ingress replica pulls the table and is exactly
  as configured as the others; nothing about routing lives only in one process.
- Traffic follows the planned shares exactly (smooth weighted round-robin, as nginx does), so the
  accuracy the planner predicted (a request-weighted mean over variants) is the one served.
- A replica that is draining (about to be stopped) gets no new requests, and one whose queue is
  full is skipped: its next request would miss the SLA anyway.
- A replica whose call just failed (its process died) is ejected for `EJECT_S`, as proxies do
  with outliers: the requests that follow go to the others at once, instead of queueing for a
  replica that Serve is still restarting; the controller's next table then routes around it.
  Until then, a replica with share 0 that is up (warm, not draining) takes the requests the
  ejected ones cannot: a spare is better than a 503.
- Queues are bounded: when every replica is full the router says "saturated" and the ingress
  answers 503 + Retry-After, instead of letting latency grow without limit. With N live ingress
  replicas each admits its 1/N of a replica's bound (N from the control bus, so when one ingress
  replica dies the others take over its share of the bound within a sync period).
- The bound is on the replica's queue, but the router counts every request it has sent and not
  yet seen back: those on the slice and those in transit (the Ray handle both ways, the
  replica's payload check). On a busy host transit can take longer than the slice itself, and
  counting it against the slice's bound would turn a host stall into 503s for requests the
  slice could still serve in time. By Little's law the count splits in proportion to the time
  spent in each part, so a route admits bound × (slice + transit) / slice, both measured on its
  recent requests (`Route.observe`). Transit is a steady-state allowance, so it is kept small
  and short-lived: it starts at zero and is blended in (one slow first answer, e.g. a cold
  handle, does not open the gate), never exceeds `TRANSIT_MAX` times the bound, and is dropped
  when the route has not been answered for `TRANSIT_STALE_S` (after an idle gap or a stall, a
  burst meets the plain bound, not a stale allowance).
Not thread-safe by design: an ingress calls it from its single asyncio event loop.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

EJECT_S = 5.0
TRANSIT_MAX = 4.0  # a route admits at most this many times its bound while transit is slow
TRANSIT_STALE_S = 5.0  # the transit allowance lapses when no answer has come back for this long
EWMA_WEIGHT = 0.2  # weight of the newest request in a route's slice and transit times


@dataclass(frozen=True)
class RouteEntry:
    """One slice replica as the controller declares it."""

    name: str  # Serve application name of the replica
    service: str
    variant: str
    share: float  # of its service's traffic
    max_queue: int  # requests in flight (queued + executing) beyond which a new one would miss the SLA
    draining: bool = False

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError(f"replica {self.name}: max_queue must be >= 1, got {self.max_queue}")
        if self.share < 0 or not math.isfinite(self.share):
            raise ValueError(f"replica {self.name}: share must be finite and >= 0, got {self.share}")


@dataclass(frozen=True)
class RoutingTable:
    """Every route of every service, as one versioned value (`version` only identifies it)."""

    version: int
    entries: tuple[RouteEntry, ...] = ()

    def services(self) -> tuple[str, ...]:
        return tuple(sorted({e.service for e in self.entries}))

    def for_service(self, service: str) -> tuple[RouteEntry, ...]:
        return tuple(e for e in self.entries if e.service == service)

    def same_routes(self, other: RoutingTable | None) -> bool:
        """Equal apart from the version (no need to publish again)."""
        return other is not None and set(self.entries) == set(other.entries)


@dataclass
class Route:
    """One slice replica as a router sees it: the declared entry plus live request state."""

    entry: RouteEntry
    inflight: int = 0
    bound: int = 1  # this ingress replica's part of the entry's max_queue
    ejected_until: float = 0.0  # after a failed call: skipped until then
    slice_s: float = 0.0  # recent time of a request on the replica (0: none measured yet)
    transit_s: float = 0.0  # recent time of a request outside it, from acquire to response
    observed_at: float = -math.inf  # when the last answer came back (monotonic seconds)
    _current: float = 0.0  # smooth-WRR state

    @property
    def name(self) -> str:
        return self.entry.name

    def admits(self, now: float) -> int:
        """Requests this ingress may have in flight to the replica at `now`: its bound on the
        replica's queue, plus what transit holds at the same time (module docstring)."""
        if self.slice_s <= 0.0 or now - self.observed_at > TRANSIT_STALE_S:
            return self.bound
        return math.floor(self.bound * min(TRANSIT_MAX, (self.slice_s + self.transit_s) / self.slice_s))

    def observe(self, slice_s: float, total_s: float, now: float) -> None:
        """One answered request: `slice_s` on the replica (its own report), `total_s` in all.
        Values that are not finite and positive are ignored (a replica's bad report must not
        open or close the gate for good)."""
        if not (math.isfinite(slice_s) and math.isfinite(total_s) and slice_s > 0.0):
            return
        transit_s = max(0.0, total_s - slice_s)
        if now - self.observed_at > TRANSIT_STALE_S:
            self.transit_s = 0.0  # a stale allowance is not carried over: blend it in anew
        self.slice_s = slice_s if self.slice_s <= 0.0 else self.slice_s + EWMA_WEIGHT * (slice_s - self.slice_s)
        self.transit_s += EWMA_WEIGHT * (transit_s - self.transit_s)
        self.observed_at = now

    def has_room(self, now: float) -> bool:
        return self.entry.share > 0 and self.can_take(now)

    def can_take(self, now: float) -> bool:
        """Up, not draining, not ejected and under its bound, whatever its share."""
        return not self.entry.draining and self.inflight < self.admits(now) and now >= self.ejected_until


def queue_bound(throughput_rps: float, sla_ms: float, batch: int) -> int:
    """How many requests a replica may hold before a new one would wait longer than the SLA.

    A request that arrives behind `n` others waits about n / throughput; beyond
    throughput × SLA it cannot meet the SLA. Never below four batches, so batching still fills
    and a short stall (a replica's first requests, a busy host) does not turn into 503s.
    """
    by_sla = math.floor(max(throughput_rps, 0.0) * sla_ms / 1000.0)
    return max(4 * batch, by_sla, 1)


def per_ingress_bound(bound: int, ingress_replicas: int) -> int:
    """One ingress replica's part of a replica's queue bound (they admit independently)."""
    return max(1, math.ceil(bound / max(1, ingress_replicas)))


class Router:
    """Weighted, drain-aware, bounded-queue choice among one service's slice replicas."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._peers = 1  # live ingress replicas, this one included

    def sync(self, entries: Iterable[RouteEntry]) -> None:
        """Make the routes exactly `entries`, keeping the in-flight counts of routes that stay
        (requests already sent to a replica still come back through this router)."""
        new: dict[str, Route] = {}
        for e in entries:
            old = self._routes.get(e.name)
            new[e.name] = Route(e, inflight=old.inflight if old else 0,
                                bound=per_ingress_bound(e.max_queue, self._peers),
                                ejected_until=old.ejected_until if old else 0.0,
                                slice_s=old.slice_s if old else 0.0, transit_s=old.transit_s if old else 0.0,
                                observed_at=old.observed_at if old else -math.inf)
        self._routes = new

    def set_peers(self, ingress_replicas: int) -> None:
        """How many ingress replicas share each replica's queue bound now."""
        self._peers = max(1, ingress_replicas)
        for r in self._routes.values():
            r.bound = per_ingress_bound(r.entry.max_queue, self._peers)

    # -- per request (from the ingress) ---------------------------------------------------
    def acquire(self, now: float = 0.0) -> Route | None:
        """The replica for the next request (its in-flight count taken), or None if saturated.
        `now` is a monotonic clock reading (for ejections)."""
        eligible = [r for r in self._routes.values() if r.has_room(now)]
        if not eligible:
            spares = [r for r in self._routes.values() if r.can_take(now)]
            if not spares:
                return None
            spare = min(spares, key=lambda r: (r.inflight, r.name))
            spare.inflight += 1
            return spare
        total = sum(r.entry.share for r in eligible)
        for r in eligible:
            r._current += r.entry.share
        best = max(eligible, key=lambda r: r._current)
        best._current -= total
        best.inflight += 1
        return best

    def release(self, name: str) -> None:
        r = self._routes.get(name)
        if r is not None and r.inflight > 0:
            r.inflight -= 1

    def observe(self, name: str, slice_s: float, total_s: float, now: float) -> None:
        """An answered request's time on the replica and in all (see `Route.observe`)."""
        r = self._routes.get(name)
        if r is not None:
            r.observe(slice_s, total_s, now)

    def eject(self, name: str, now: float, seconds: float = EJECT_S) -> None:
        """The replica failed a call: send it nothing for `seconds`."""
        r = self._routes.get(name)
        if r is not None:
            r.ejected_until = now + seconds

    # -- queries --------------------------------------------------------------------------
    def has_routes(self) -> bool:
        """False before the first table: the ingress then answers 'no route yet', not 'saturated'."""
        return any(r.entry.share > 0 and not r.entry.draining for r in self._routes.values())

    def inflight(self, name: str) -> int:
        r = self._routes.get(name)
        return r.inflight if r else 0

    def snapshot(self, now: float) -> list[dict[str, object]]:
        return [
            {"name": r.name, "service": r.entry.service, "variant": r.entry.variant, "share": r.entry.share,
             "inflight": r.inflight, "max_queue": r.entry.max_queue, "admits": r.admits(now),
             "draining": r.entry.draining}
            for r in self._routes.values()
        ]
