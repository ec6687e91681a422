"""When requests are sent: open-loop Poisson arrivals at a constant or piecewise-constant rate.

Pure logic (no clocks, no I/O except `load_rate_trace`). The generator schedules each request at
an absolute offset from the start, so a slow server never lowers the offered rate (the flaw of
closed-loop generators, "coordinated omission").
"""
from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadgen.errors import LoadgenInputError

TRACE_HEADER = ("t_s", "rate_rps")


@dataclass(frozen=True)
class RateTrace:
    """Piecewise-constant request rate: `rates[i]` holds from `starts[i]` until the next start (the last one forever)."""

    starts: tuple[float, ...]
    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.starts or len(self.starts) != len(self.rates) or self.starts[0] != 0.0:
            raise ValueError("a RateTrace needs one rate per start, starting at t=0")

    @classmethod
    def constant(cls, rate_rps: float) -> "RateTrace":
        if not (math.isfinite(rate_rps) and rate_rps > 0):
            raise LoadgenInputError(f"--rate must be a positive number of requests/s, got {rate_rps}")
        return cls((0.0,), (float(rate_rps),))

    def segments(self, duration_s: float) -> Iterator[tuple[float, float, float]]:
        """(start, end, rate) of each constant piece inside [0, duration_s)."""
        for i, (start, rate) in enumerate(zip(self.starts, self.rates)):
            if start >= duration_s:
                return
            end = self.starts[i + 1] if i + 1 < len(self.starts) else math.inf
            yield start, min(end, duration_s), rate

    def mean_rate(self, duration_s: float) -> float:
        """The average requested rate over [0, duration_s): what the offered rate should come close to."""
        return sum((end - start) * rate for start, end, rate in self.segments(duration_s)) / duration_s


def poisson_arrivals(trace: RateTrace, duration_s: float, rng: random.Random) -> Iterator[float]:
    """Send offsets (s from start) of a Poisson process whose rate follows `trace`, until `duration_s`.

    Time rescaling: each gap is a unit-mean exponential amount of "expected arrivals", spent at
    the rate of whichever pieces it crosses. For a constant rate that is exactly exponential
    inter-arrival times with mean 1/rate; a rate change mid-gap is honoured (memorylessness).
    """
    t = 0.0
    pieces = list(trace.segments(duration_s))
    i = 0
    need = rng.expovariate(1.0)
    while i < len(pieces):
        _, end, rate = pieces[i]
        if rate > 0 and t + need / rate < end:
            t += need / rate
            yield t
            need = rng.expovariate(1.0)
        else:
            need -= rate * (end - t)
            t = end
            i += 1


def parse_rate_trace(text: str, source: str) -> RateTrace:
    """Read a `t_s,rate_rps` CSV; errors name `source` and the line so the user can fix the file."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != TRACE_HEADER:
        raise LoadgenInputError(f"{source}: line 1: expected the header 't_s,rate_rps', got {','.join(header or [])!r}")
    starts: list[float] = []
    rates: list[float] = []
    for lineno, row in enumerate(rows, start=2):
        if not "".join(row).strip():
            continue
        if len(row) != 2:
            raise LoadgenInputError(f"{source}: line {lineno}: expected 2 columns t_s,rate_rps, got {row!r}")
        try:
            t, rate = float(row[0]), float(row[1])
        except ValueError:
            raise LoadgenInputError(f"{source}: line {lineno}: t_s and rate_rps must be numbers, got {row!r}") from None
        if not (math.isfinite(t) and math.isfinite(rate)) or rate < 0:
            raise LoadgenInputError(f"{source}: line {lineno}: rate_rps must be a finite number >= 0, got {row!r}")
        if not starts and t != 0:
            raise LoadgenInputError(f"{source}: line {lineno}: the first row must start at t_s=0, got {t}")
        if starts and t <= starts[-1]:
            raise LoadgenInputError(f"{source}: line {lineno}: t_s={t} is not after the previous row's t_s={starts[-1]}")
        starts.append(t)
        rates.append(rate)
    if not starts:
        raise LoadgenInputError(f"{source}: no data rows after the header 't_s,rate_rps'")
    if not any(rates):
        raise LoadgenInputError(f"{source}: every rate_rps is 0, so no request would be sent")
    return RateTrace(tuple(starts), tuple(rates))


def load_rate_trace(path: str | Path) -> RateTrace:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise LoadgenInputError(f"{p}: cannot read the rate trace: {exc.strerror or exc}") from None
    return parse_rate_trace(text, str(p))
