"""A simulated GPU with an NVML-like energy counter, driven by the performance model.

It stands in for a real device wherever there is none (tests, `controller demo`, laptops):
`execute()` says how long a batch takes on a slice and records that busy interval;
`total_energy_mj()` integrates power over time exactly like
`nvmlDeviceGetTotalEnergyConsumption` would report it: idle power for the whole elapsed
time plus the dynamic power of every busy interval, concurrent slices adding up, the total
capped at the GPU's power limit (a real GPU throttles there). Nothing here sleeps: the
caller sleeps or awaits the returned service time, so a fake clock makes tests exact.
"""
from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from models.protocol import PerfModel


@dataclass(frozen=True)
class _Busy:
    start: float
    end: float
    dynamic_w: float
    slice_id: Hashable


class SimulatedGpu:
    """One simulated GPU of a catalog type; thread-safe.

    `slice_id` names the MIG slice a batch runs on: batches on the same slice run one after
    another (a batch submitted while the slice is busy starts when it frees up), batches on
    different slices overlap. `slice_id=None` means an unnamed slice that never queues.
    """

    def __init__(self, gpu_type: str, perf: PerfModel,
                 clock: Callable[[], float] = time.monotonic, uuid: str | None = None) -> None:
        self.gpu_type = gpu_type
        self.perf = perf
        self.uuid = uuid or f"GPU-{uuidlib.uuid4()}"
        self._idle_w = perf.idle_power_w(gpu_type)
        self._max_w = perf.max_power_w(gpu_type)
        self._clock = clock
        self._lock = threading.Lock()
        self._settled_at = clock()  # energy and busy time are integrated up to here
        self._energy_j = 0.0
        self._pending: list[_Busy] = []  # intervals not yet over at _settled_at
        self._busy_s: dict[Hashable, float] = defaultdict(float)
        self._free_at: dict[Hashable, float] = {}

    def _now(self) -> float:
        # A clock that steps back must not make the counter go backwards.
        return max(self._clock(), self._settled_at)

    def _power_w(self, t: float, intervals: list[_Busy]) -> float:
        dynamic = sum(b.dynamic_w for b in intervals if b.start <= t < b.end)
        return min(self._idle_w + dynamic, self._max_w)

    def _settle(self, now: float) -> None:
        """Integrate power and per-slice busy time from the last settlement up to `now`."""
        t0 = self._settled_at
        if now <= t0:
            return
        edges = sorted({t0, now} | {t for b in self._pending for t in (b.start, b.end) if t0 < t < now})
        for lo, hi in zip(edges, edges[1:]):
            self._energy_j += self._power_w(lo, self._pending) * (hi - lo)
        for b in self._pending:
            self._busy_s[b.slice_id] += max(0.0, min(b.end, now) - max(b.start, t0))
        self._pending = [b for b in self._pending if b.end > now]
        self._settled_at = now

    def total_energy_mj(self) -> int:
        """Energy since creation in millijoules; never decreases (like NVML's counter)."""
        with self._lock:
            self._settle(self._now())
            return int(self._energy_j * 1000.0)

    def power_mw(self) -> int:
        """Power draw now in milliwatts: idle plus the slices busy at this instant."""
        with self._lock:
            now = self._now()
            self._settle(now)
            return int(self._power_w(now, self._pending) * 1000.0)

    def execute(self, compute_slices: int, variant_key: str, batch: int,
                slice_id: Hashable | None = None) -> float:
        """Record one batch on a slice; return seconds until it completes (service time,
        plus the wait for the slice's previous batch when `slice_id` is busy)."""
        service_s = self.perf.batch_latency_ms(variant_key, self.gpu_type, compute_slices, batch) / 1000.0
        dynamic_w = self.perf.busy_power_w(variant_key, self.gpu_type, compute_slices, batch)
        with self._lock:
            now = self._now()
            self._settle(now)
            start = max(now, self._free_at.get(slice_id, now)) if slice_id is not None else now
            end = start + service_s
            self._pending.append(_Busy(start, end, dynamic_w, slice_id))
            if slice_id is not None:
                self._free_at[slice_id] = end
            return end - now

    def busy_seconds(self, slice_id: Hashable | None) -> float:
        """Seconds the slice has been busy so far (elapsed part of its recorded batches)."""
        with self._lock:
            self._settle(self._now())
            return self._busy_s.get(slice_id, 0.0)
