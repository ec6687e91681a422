"""The carbon-intensity signal: one reading type, one provider protocol, and the shared
keep-the-last-good-value rule.

Why the rule lives here: the controller must keep serving when a grid API times out, rate
limits or returns garbage, so every provider answers `current()` with its last good value
(marked `stale=True`, a warning logged) once it has read one. Before the first good value
there is nothing honest to return, so `CarbonSourceError` says what failed and what to do.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

log = logging.getLogger(__name__)


class CarbonSourceError(RuntimeError):
    """A carbon-intensity source could not give a value (message: what failed, what to do)."""


@dataclass(frozen=True)
class CarbonReading:
    value_gco2_per_kwh: float
    timestamp: datetime  # the time the value refers to (UTC)
    source: str  # the spec string, e.g. "electricitymaps:DE"
    stale: bool = False  # True: the last good value, re-served after a failed refresh

    def to_json(self) -> dict:
        return {
            "value_gco2_per_kwh": self.value_gco2_per_kwh,
            "timestamp": self.timestamp.isoformat(),
            "source": self.source,
            "stale": self.stale,
        }


class CarbonSource(Protocol):
    name: str

    def current(self) -> CarbonReading: ...
    def forecast(self, hours: int) -> list[CarbonReading]: ...


class CachedSource:
    """Base of the HTTP providers: refresh at most every `min_refresh_s`, fall back to the last good value.

    Subclasses implement `_fetch_current()` and `_fetch_forecast(hours)`, raising
    `CarbonSourceError` with a specific message on any failure.
    """

    name = "source"

    def __init__(self, min_refresh_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._last: CarbonReading | None = None
        self._last_at = float("-inf")
        self._last_forecast: list[CarbonReading] = []

    def current(self) -> CarbonReading:
        if self._last is not None and self._clock() - self._last_at < self._min_refresh_s:
            return self._last
        try:
            reading = self._fetch_current()
        except CarbonSourceError as exc:
            if self._last is None:
                raise
            log.warning("%s: %s; keeping the last good value %.1f gCO2/kWh from %s (stale)",
                        self.name, exc, self._last.value_gco2_per_kwh, self._last.timestamp.isoformat())
            return replace(self._last, stale=True)
        self._last, self._last_at = reading, self._clock()
        return reading

    def forecast(self, hours: int) -> list[CarbonReading]:
        try:
            self._last_forecast = self._fetch_forecast(hours)
        except CarbonSourceError as exc:
            if not self._last_forecast:
                raise
            log.warning("%s: forecast refresh failed (%s); keeping the previous forecast (stale)", self.name, exc)
            return [replace(r, stale=True) for r in self._last_forecast]
        return self._last_forecast

    def _fetch_current(self) -> CarbonReading:
        raise NotImplementedError

    def _fetch_forecast(self, hours: int) -> list[CarbonReading]:
        raise NotImplementedError


def parse_time(text: str) -> datetime:
    """ISO 8601 with `Z` or offset, as every provider writes it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
