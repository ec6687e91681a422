"""Energy meters behind one Zeus-style protocol: `begin_window(name)` / `end_window(name)`.

Why windows: the control loop, the profiler and the benchmark all ask the same question ("how
many joules did each device use between here and there?") over overlapping spans, so a meter
keeps any number of named windows open at once and answers with a `Measurement`.

Honesty rule (CodeCarbon's most common complaint is a silent fallback to TDP constants): a
meter that cannot read its hardware says so ONCE through `logging` and from then on returns
measurements with `estimated=True`, an empty `energy_j` and the reason in `notes`; callers
that need a number must estimate it themselves and carry the `estimated` flag forward.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    """Energy per device over one window (joules), and whether any of it is an estimate."""

    energy_j: dict[str, float]
    duration_s: float
    estimated: bool
    source: str
    notes: tuple[str, ...] = field(default=())  # why a figure is estimated or missing

    @property
    def total_j(self) -> float:
        return sum(self.energy_j.values())

    @property
    def available(self) -> bool:
        """False when the meter could not read anything (energy_j is then empty)."""
        return bool(self.energy_j)


class Meter(Protocol):
    """What every energy meter offers (NVML, RAPL, simulated)."""

    source: str

    def devices(self) -> list[str]: ...
    def begin_window(self, name: str) -> None: ...
    def end_window(self, name: str) -> Measurement: ...
    def close(self) -> None: ...


class WindowMeter(ABC):
    """Window bookkeeping and the report-once rule shared by the concrete meters.

    Subclasses implement `_read()` (an opaque snapshot of their counters, taken at window
    begin and end) and `_measure(start, end, duration_s)`, which turns two snapshots into
    per-device joules plus the notes explaining any estimate.
    """

    source = "meter"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self.unavailable_reason: str | None = None

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    def _mark_unavailable(self, reason: str) -> None:
        """Record that this meter cannot measure; logged once, then carried in every Measurement."""
        if self.unavailable_reason is None:
            self.unavailable_reason = reason
            log.warning("%s energy meter unavailable: %s; energy figures that depend on it are estimated",
                        self.source, reason)

    def devices(self) -> list[str]:
        return []

    def begin_window(self, name: str) -> None:
        with self._lock:
            if name in self._windows:
                raise ValueError(f"{self.source} meter: window {name!r} is already open; end it first")
            snap = None if self.unavailable_reason else self._read()
            self._windows[name] = (self._clock(), snap)

    def end_window(self, name: str) -> Measurement:
        with self._lock:
            try:
                t0, start = self._windows.pop(name)
            except KeyError:
                raise ValueError(
                    f"{self.source} meter: no open window {name!r}; call begin_window({name!r}) first"
                ) from None
            end = None if self.unavailable_reason else self._read()
            duration = max(0.0, self._clock() - t0)
            if self.unavailable_reason or start is None or end is None:
                reason = self.unavailable_reason or "meter became unavailable during the window"
                return Measurement({}, duration, True, self.source, (reason,))
            energy, notes = self._measure(start, end, duration)
            return Measurement(energy, duration, bool(notes), self.source, tuple(notes))

    def close(self) -> None:
        """Release hardware handles; open windows are dropped."""
        self._windows.clear()

    @abstractmethod
    def _read(self) -> Any:
        """Snapshot the counters (called under the meter lock)."""

    @abstractmethod
    def _measure(self, start: Any, end: Any, duration_s: float) -> tuple[dict[str, float], list[str]]:
        """Per-device joules between two snapshots, and the reasons for any estimate."""


def counter_delta(before: float, after: float, wrap_at: float | None) -> float | None:
    """Increase of a monotonic counter; None when it went backwards and cannot be unwrapped.

    A counter with a known range (RAPL's `max_energy_range_uj`) wraps to zero; one without
    (NVML's mJ since driver load) going backwards means the driver was reloaded.
    """
    if after >= before:
        return after - before
    if wrap_at is not None and wrap_at > 0:
        return after + wrap_at - before
    return None
