"""Replay a carbon-intensity trace in (scaled) wall-clock time: `trace:NAME_OR_PATH`.

`time_scale` is trace seconds per wall second (3600: one trace hour per second, so a demo
walks through a day of grid data in 24 s); `start_offset_h` starts that many hours into
the trace. The trace loops at its end. The reading's timestamp is the trace time it replays.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from configs import ConfigError
from controller.carbon.base import CarbonReading, CarbonSourceError
from controller.carbon.trace import Trace, load_trace


class TraceSource:
    def __init__(self, trace: Trace | str | Path, *, time_scale: float = 1.0, start_offset_h: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not time_scale > 0:
            raise CarbonSourceError(f"trace: time_scale must be > 0 (trace seconds per wall second), got {time_scale}")
        if not isinstance(trace, Trace):
            try:
                trace = load_trace(trace)
            except ConfigError as exc:
                raise CarbonSourceError(f"trace: {exc}") from None
        self.trace = trace
        self.name = f"trace:{trace.name}"
        self.time_scale = time_scale
        self.start_offset_s = start_offset_h * 3600.0
        self._clock = clock
        self._t0 = clock()

    def _elapsed_s(self) -> float:
        return self.start_offset_s + (self._clock() - self._t0) * self.time_scale

    def current(self) -> CarbonReading:
        when, value = self.trace.at(self._elapsed_s())
        return CarbonReading(value, when.replace(microsecond=0), self.name)

    def forecast(self, hours: int) -> list[CarbonReading]:
        """The trace itself is the perfect forecast: the next `hours` hourly values."""
        start = self._elapsed_s()
        return [CarbonReading(v, t, self.name) for t, v in (self.trace.at(start + h * 3600.0) for h in range(hours))]
