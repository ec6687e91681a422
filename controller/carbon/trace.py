"""Carbon-intensity trace files: `timestamp,carbon_intensity_gco2_per_kwh` CSVs."""
from __future__ import annotations

import csv
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from configs import ConfigError, resolve_trace

HEADER = ("timestamp", "carbon_intensity_gco2_per_kwh")


@dataclass(frozen=True)
class Trace:
    name: str
    times: tuple[datetime, ...]
    values: tuple[float, ...]  # gCO2/kWh, one per row

    def __len__(self) -> int:
        return len(self.values)

    @property
    def hours(self) -> float:
        """Span covered, counting the last row as one more step of the median spacing."""
        if len(self.times) < 2:
            return 1.0
        step = (self.times[1] - self.times[0]).total_seconds()
        return ((self.times[-1] - self.times[0]).total_seconds() + step) / 3600.0

    def at(self, elapsed_s: float, loop: bool = True) -> tuple[datetime, float]:
        """Time and value `elapsed_s` seconds after the first row (a row holds until the next one).

        Past the end the trace starts over when `loop`, else the last value holds.
        """
        span = self.hours * 3600.0
        elapsed_s = elapsed_s % span if loop else min(max(elapsed_s, 0.0), span)
        when = self.times[0] + timedelta(seconds=elapsed_s)
        return when, self.values[max(0, bisect_right(self.times, when) - 1)]


def load_trace(name_or_path: str | Path) -> Trace:
    """Read a bundled trace by name or any CSV with the standard header; errors say file and line."""
    path = resolve_trace(name_or_path)
    times: list[datetime] = []
    values: list[float] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:2]) != HEADER:
            raise ConfigError(f"{path}: line 1: expected header {','.join(HEADER)!r}, got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                t = datetime.fromisoformat(row[0].strip().replace("Z", "+00:00"))
                v = float(row[1])
            except (ValueError, IndexError) as exc:
                raise ConfigError(f"{path}: line {lineno}: cannot read {row!r}: {exc}") from None
            if v < 0:
                raise ConfigError(f"{path}: line {lineno}: negative carbon intensity {v}")
            if times and t <= times[-1]:
                raise ConfigError(f"{path}: line {lineno}: timestamp {row[0]} is not after the previous row")
            times.append(t)
            values.append(v)
    if not values:
        raise ConfigError(f"{path}: no data rows")
    return Trace(path.stem, tuple(times), tuple(values))
