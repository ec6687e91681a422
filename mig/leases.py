"""Who holds a slice: leases that a live replica renews, and that lapse when it stops renewing.

Why leases and not "in use" marks: a mark written when a replica starts is only cleared when
something remembers to clear it, so a crash, `ray stop` or a lost controller left marks behind
for ever and the slice could never be re-partitioned again. A lease carries the time it was
last renewed; the replica renews it every `RENEW_EVERY_S`, and one not renewed for
`LEASE_TTL_S` is *stale*: it is shown (and can be cleared) but never blocks anything. A lease
taken in another Ray session (the cluster was stopped and started again since) is stale at
once, so a fresh cluster on an old state directory starts with nothing stuck.

Several owners may hold one slice at once (make-before-break starts the new replica on a kept
slice before the old one stops). Renewal times are wall-clock seconds, which survive restarts.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from mig.state_file import StateFile

LEASE_TTL_S = 30.0
RENEW_EVERY_S = 5.0
LEASES_VERSION = 1


@dataclass(frozen=True)
class LeaseRecord:
    """A replica's claim on a slice; renewed while the replica lives, stale once it is not.

    Part of the node ↔ controller contract (re-exported by gpu_node/records.py)."""

    gpu: int
    gi_id: int
    owner: str  # the replica's Serve application name
    renewed_at: float  # wall clock (persists across restarts, unlike a monotonic clock)
    stale: bool


@dataclass(frozen=True)
class _Lease:
    gpu: int
    gi_id: int
    owner: str
    renewed_at: float
    session: str = ""  # the Ray session it was taken in ("" outside Ray)

    @property
    def key(self) -> tuple[int, int, str]:
        return self.gpu, self.gi_id, self.owner


def _decode(doc: dict) -> dict[tuple[int, int, str], _Lease]:
    leases = [_Lease(**d) for d in doc.get("leases", [])]
    return {lease.key: lease for lease in leases}


def _encode(leases: dict[tuple[int, int, str], _Lease]) -> dict:
    return {"leases": [asdict(lease) for _, lease in sorted(leases.items())]}


class LeaseBook:
    """The leases of one node, persisted in `path` (or in memory); process- and thread-safe.

    `session` is the current Ray session name ("" when unknown, e.g. in `gpu-node mig`): leases
    from another session are stale. `clock` is wall-clock seconds (injectable for tests).
    """

    def __init__(self, path: Path | str | None = None, *, ttl_s: float = LEASE_TTL_S, session: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        if ttl_s <= 0:
            raise ValueError(f"lease TTL must be > 0 s, got {ttl_s}")
        self.ttl_s = ttl_s
        self.session = session
        self._clock = clock
        self._file = StateFile(path, version=LEASES_VERSION, what="slice lease", decode=_decode, encode=_encode)

    @property
    def path(self) -> Path | None:
        return self._file.path

    def _stale(self, lease: _Lease, now: float) -> bool:
        other_session = bool(self.session and lease.session and lease.session != self.session)
        return other_session or now - lease.renewed_at >= self.ttl_s

    def _record(self, lease: _Lease, now: float) -> LeaseRecord:
        return LeaseRecord(lease.gpu, lease.gi_id, lease.owner, lease.renewed_at, self._stale(lease, now))

    def acquire(self, gpu: int, gi_id: int, owner: str) -> None:
        """Take or renew `owner`'s lease on a slice (renewal is the same call)."""
        if not owner:
            raise ValueError("a lease needs an owner (the replica's Serve application name)")
        with self._file.transaction() as leases:
            lease = _Lease(gpu, gi_id, owner, self._clock(), self.session)
            leases[lease.key] = lease

    def renew(self, gpu: int, gi_id: int, owner: str) -> bool:
        """Renew `owner`'s lease on a slice if it still exists; False when it does not (it lapsed
        and was dropped, perhaps with the slice: a GI id may since name a new slice)."""
        with self._file.transaction() as leases:
            if (gpu, gi_id, owner) not in leases:
                return False
            lease = _Lease(gpu, gi_id, owner, self._clock(), self.session)
            leases[lease.key] = lease
            return True

    def release(self, gpu: int, gi_id: int, owner: str) -> None:
        """Drop `owner`'s lease on a slice (idempotent: releasing twice is fine)."""
        with self._file.transaction() as leases:
            leases.pop((gpu, gi_id, owner), None)

    def leases(self) -> list[LeaseRecord]:
        """Every lease, live and stale, ordered by GPU, slice and owner."""
        now = self._clock()
        with self._file.transaction() as leases:
            return [self._record(lease, now) for _, lease in sorted(leases.items())]

    def live_owners(self, gpu: int, gi_id: int) -> list[str]:
        """Owners whose lease on this slice is live: what makes a simulated destroy fail."""
        return [r.owner for r in self.leases() if r.gpu == gpu and r.gi_id == gi_id and not r.stale]

    def _drop(self, keep: Callable[[_Lease, float], bool]) -> list[LeaseRecord]:
        now = self._clock()
        with self._file.transaction() as leases:
            gone = [lease for lease in leases.values() if not keep(lease, now)]
            for lease in gone:
                del leases[lease.key]
            return [self._record(lease, now) for lease in sorted(gone, key=lambda x: x.key)]

    def release_owners(self, owners: Iterable[str]) -> list[LeaseRecord]:
        """Drop every lease of these owners (replicas that no longer exist); returns what went."""
        names = set(owners)
        return self._drop(lambda lease, _now: lease.owner not in names)

    def release_stale(self) -> list[LeaseRecord]:
        """Drop every stale lease; returns what went (an operator's `gpu-node mig release --stale`)."""
        return self._drop(lambda lease, now: not self._stale(lease, now))

    def forget_slice(self, gpu: int, gi_id: int) -> list[LeaseRecord]:
        """Drop the leases of a slice that was just destroyed (they could only have been stale)."""
        return self._drop(lambda lease, _now: (lease.gpu, lease.gi_id) != (gpu, gi_id))
