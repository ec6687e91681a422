"""Routing logic of the ingress: which slice replica gets the next request.

Pure logic, no Ray, no I/O, so it is tested directly and the ingress only wires it to handles.
Why these rules:
- Traffic follows the planned shares exactly (smooth weighted round-robin, as nginx does), so the
  accuracy the planner predicted (a request-weighted mean over variants) is the one served.
- A replica that is draining (about to be stopped for a re-partition) gets no new requests, and
  one whose queue is full is skipped: its next request would miss the SLA anyway.
- Queues are bounded: when every replica is full the router says "saturated" and the ingress
  answers 503 + Retry-After, instead of letting latency grow without limit.
Not thread-safe by design: the ingress calls it from its single asyncio event loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Route:
    """One slice replica as the router sees it."""

    name: str  # Serve application name of the replica
    variant: str
    max_queue: int  # requests in flight (queued + executing) beyond which it is skipped
    share: float = 0.0
    inflight: int = 0
    draining: bool = False
    _current: float = 0.0  # smooth-WRR state

    def has_room(self) -> bool:
        return not self.draining and self.share > 0 and self.inflight < self.max_queue


def queue_bound(throughput_rps: float, sla_ms: float, batch: int) -> int:
    """How many requests a replica may hold before a new one would wait longer than the SLA.

    A request that arrives behind `n` others waits about n / throughput; beyond
    throughput × SLA it cannot meet the SLA. Never below four batches, so batching still fills and a short stall (a
    replica's first requests, a busy host) does not turn into 503s.
    """
    by_sla = math.floor(max(throughput_rps, 0.0) * sla_ms / 1000.0)
    return max(4 * batch, by_sla, 1)


class Router:
    """Weighted, drain-aware, bounded-queue choice among slice replicas."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    # -- configuration (from the control loop) -------------------------------------------
    def add(self, name: str, variant: str, max_queue: int) -> None:
        """Register a replica (share 0: it receives nothing until `set_shares` gives it some)."""
        if max_queue < 1:
            raise ValueError(f"replica {name}: max_queue must be >= 1, got {max_queue}")
        old = self._routes.get(name)
        self._routes[name] = Route(name, variant, max_queue, inflight=old.inflight if old else 0)

    def set_bounds(self, bounds: dict[str, int]) -> None:
        """New queue bounds (the SLA changed), keeping shares and in-flight counts."""
        for name, bound in bounds.items():
            if name in self._routes:
                self._routes[name].max_queue = max(1, int(bound))

    def set_shares(self, shares: dict[str, float]) -> None:
        """Replace all shares; replicas not named get share 0. Shares are normalised."""
        unknown = set(shares) - set(self._routes)
        if unknown:
            raise KeyError(f"shares name unknown replicas {sorted(unknown)}; known: {sorted(self._routes)}")
        if any(s < 0 or not math.isfinite(s) for s in shares.values()):
            raise ValueError(f"shares must be finite and >= 0, got {shares}")
        total = sum(shares.values())
        for r in self._routes.values():
            r.share = shares.get(r.name, 0.0) / total if total > 0 else 0.0
            r._current = 0.0
            if r.share > 0:
                r.draining = False

    def drain(self, name: str) -> None:
        """Stop sending new requests to `name`; in-flight ones finish."""
        r = self._route(name)
        r.draining = True
        r.share = 0.0

    def remove(self, name: str) -> None:
        self._routes.pop(name, None)

    # -- per request (from the ingress) ---------------------------------------------------
    def acquire(self) -> Route | None:
        """The replica for the next request (its in-flight count taken), or None if saturated."""
        eligible = [r for r in self._routes.values() if r.has_room()]
        if not eligible:
            return None
        total = sum(r.share for r in eligible)
        for r in eligible:
            r._current += r.share
        best = max(eligible, key=lambda r: r._current)
        best._current -= total
        best.inflight += 1
        return best

    def release(self, name: str) -> None:
        r = self._routes.get(name)
        if r is not None and r.inflight > 0:
            r.inflight -= 1

    # -- queries --------------------------------------------------------------------------
    def _route(self, name: str) -> Route:
        try:
            return self._routes[name]
        except KeyError:
            raise KeyError(f"unknown replica {name!r}; known: {sorted(self._routes)}") from None

    def inflight(self, name: str) -> int:
        return self._route(name).inflight if name in self._routes else 0

    def shares(self) -> dict[str, float]:
        return {n: r.share for n, r in self._routes.items()}

    def names(self) -> list[str]:
        return list(self._routes)

    def snapshot(self) -> list[dict]:
        return [
            {"name": r.name, "variant": r.variant, "share": r.share, "inflight": r.inflight,
             "max_queue": r.max_queue, "draining": r.draining}
            for r in self._routes.values()
        ]
