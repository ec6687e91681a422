"""When requests are sent: open-loop Poisson arrivals whose rate follows a trace.

A `RateTrace` is a piecewise-constant request rate (req/s) over time, optionally periodic. It
comes from
- a constant (`--rate`),
- a `t_s,rate_rps` CSV: rate rows, the first at t_s=0; the last rate holds to the end,
- a CSV of request timestamps whose first column is `TIMESTAMP` (the Azure LLM inference traces
  bundled in configs/load/): the rate is estimated per second (`from_timestamps`) and the trace
  repeats after its span,
and can be scaled (`scaled`: rate and time axis independently) and multiplied by a diurnal
envelope (`diurnal`, `modulated`) to turn a one-hour trace into days of traffic.

Pure logic (no clocks, no I/O except `load_rate_trace`). The generator schedules each request at
an absolute offset from the start, so a slow server never lowers the offered rate (the flaw of
closed-loop generators, "coordinated omission").
"""
from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loadgen.errors import LoadgenInputError

TRACE_HEADER = ("t_s", "rate_rps")
TIMESTAMP_COLUMN = "TIMESTAMP"
DAY_S = 86400.0


@dataclass(frozen=True)
class RateTrace:
    """Piecewise-constant request rate: `rates[i]` holds from `starts[i]` until the next start.

    After the last start the last rate holds forever, unless `period_s` is set: then the whole
    trace repeats every `period_s` seconds (timestamp traces and diurnal envelopes loop).
    """

    starts: tuple[float, ...]
    rates: tuple[float, ...]
    period_s: float | None = None

    def __post_init__(self) -> None:
        if not self.starts or len(self.starts) != len(self.rates) or self.starts[0] != 0.0:
            raise ValueError("a RateTrace needs one rate per start, starting at t=0")
        if self.period_s is not None and not self.starts[-1] < self.period_s:
            raise ValueError("a periodic RateTrace's starts must lie inside its period")

    @classmethod
    def constant(cls, rate_rps: float) -> RateTrace:
        if not (math.isfinite(rate_rps) and rate_rps > 0):
            raise LoadgenInputError(f"--rate must be a positive number of requests/s, got {rate_rps}")
        return cls((0.0,), (float(rate_rps),))

    @classmethod
    def from_timestamps(cls, times_s: Sequence[float], bin_s: float = 1.0, block_s: float = 60.0) -> RateTrace:
        """The request rate behind sorted arrival times, per `bin_s`, repeating after the span.

        A raw count per second is the rate plus Poisson noise; replaying the counts as rates
        (and scaling them up) would turn that noise into bursts the trace never had. So each
        bin's count is shrunk toward its `block_s` mean by the share of the within-block
        variance that is not Poisson noise (empirical Bayes: w = 1 − mean / variance, pooled
        over the trace). A Poisson-like trace is thus replayed at its per-minute rates, an
        on/off trace keeps its second-scale bursts.
        """
        if len(times_s) < 2 or times_s[-1] <= times_s[0]:
            raise ValueError("need at least two distinct arrival times")
        t0 = times_s[0]
        n = max(1, math.ceil((times_s[-1] - t0) / bin_s))
        counts = [0] * n
        for t in times_s:
            counts[min(int((t - t0) / bin_s), n - 1)] += 1
        per_block = max(1, round(block_s / bin_s))
        means = []
        for i in range(0, n, per_block):
            block = counts[i:i + per_block]
            means += [sum(block) / len(block)] * len(block)
        mean = sum(counts) / n
        resid = sum((c - m) ** 2 for c, m in zip(counts, means)) / n
        w = max(0.0, 1.0 - mean / resid) if resid > 0 else 0.0
        rates = tuple(max(0.0, m + w * (c - m)) / bin_s for c, m in zip(counts, means))
        return cls(tuple(i * bin_s for i in range(n)), rates, n * bin_s)

    @classmethod
    def diurnal(cls, peak_to_trough: float, peak_at_s: float = 0.0, day_s: float = DAY_S,
                step_s: float = 300.0) -> RateTrace:
        """A mean-1 daily envelope `1 + a·cos(2π(t − peak_at_s)/day_s)`, a = (k−1)/(k+1).

        `peak_to_trough` k is the ratio of the busiest to the quietest moment of the day (web
        and inference services typically show 2–4). Piecewise constant per `step_s`, each
        step holding the exact average of the cosine over it, so the daily mean is 1 when
        `step_s` divides `day_s`. Multiply a trace by it with `modulated`.
        """
        if not peak_to_trough >= 1.0:
            raise ValueError(f"peak_to_trough must be >= 1, got {peak_to_trough}")
        a = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
        omega = 2.0 * math.pi / day_s
        n = max(1, round(day_s / step_s))
        step = day_s / n
        rates = []
        for i in range(n):
            lo, hi = i * step - peak_at_s, (i + 1) * step - peak_at_s
            rates.append(1.0 + a * (math.sin(omega * hi) - math.sin(omega * lo)) / (omega * step))
        return cls(tuple(i * step for i in range(n)), tuple(rates), day_s)

    def scaled(self, rate: float = 1.0, time: float = 1.0) -> RateTrace:
        """Rates × `rate`; time axis × `time` (rates kept: `time=0.5` plays the trace twice as fast
        at the same rate, so it holds half the requests). Independent, so one can fit a trace's
        length and its load separately."""
        if not (rate > 0 and time > 0 and math.isfinite(rate) and math.isfinite(time)):
            raise ValueError(f"scales must be positive and finite, got rate={rate}, time={time}")
        return RateTrace(tuple(s * time for s in self.starts), tuple(r * rate for r in self.rates),
                         None if self.period_s is None else self.period_s * time)

    def modulated(self, envelope: RateTrace, duration_s: float) -> RateTrace:
        """This trace × `envelope` pointwise over [0, duration_s) (the product's last piece then holds)."""
        bounds = sorted({s for s, _, _ in self.segments(duration_s)} | {s for s, _, _ in envelope.segments(duration_s)})
        mine, env = self.segments(duration_s), envelope.segments(duration_s)
        a, b = next(mine), next(env)
        rates = []
        for t in bounds:
            while a[1] <= t:
                a = next(mine)
            while b[1] <= t:
                b = next(env)
            rates.append(a[2] * b[2])
        return RateTrace(tuple(bounds), tuple(rates))

    def segments(self, duration_s: float) -> Iterator[tuple[float, float, float]]:
        """(start, end, rate) of each constant piece inside [0, duration_s)."""
        offset = 0.0
        while True:
            for i, (start, rate) in enumerate(zip(self.starts, self.rates)):
                begin = offset + start
                if begin >= duration_s:
                    return
                nxt = self.starts[i + 1] if i + 1 < len(self.starts) else (self.period_s or math.inf)
                yield begin, min(offset + nxt, duration_s), rate
            if self.period_s is None:
                return
            offset += self.period_s

    def mean_rate(self, duration_s: float) -> float:
        """The average requested rate over [0, duration_s): what the offered rate should come close to."""
        return sum((end - start) * rate for start, end, rate in self.segments(duration_s)) / duration_s

    def binned(self, bin_s: float, duration_s: float) -> list[float]:
        """The mean rate of each `bin_s` interval of [0, duration_s) (the last bin may be shorter)."""
        n = max(1, math.ceil(duration_s / bin_s - 1e-9))
        req = [0.0] * n
        for start, end, rate in self.segments(duration_s):
            i = int(start / bin_s)
            while start < end and i < n:
                stop = min(end, (i + 1) * bin_s)
                req[i] += (stop - start) * rate
                start, i = stop, i + 1
        return [r / (min((i + 1) * bin_s, duration_s) - i * bin_s) for i, r in enumerate(req)]

    def peak_rate(self, duration_s: float, block_s: float = 60.0) -> float:
        """The highest mean rate of any `block_s` block (default: the busiest minute)."""
        return max(self.binned(block_s, duration_s))

    def with_peak(self, peak_rps: float, duration_s: float, block_s: float = 60.0) -> RateTrace:
        """Scaled in rate so that its busiest `block_s` block within `duration_s` runs at `peak_rps`."""
        peak = self.peak_rate(duration_s, block_s)
        if peak <= 0:
            raise ValueError("the trace sends no request in this duration")
        return self.scaled(rate=peak_rps / peak)


def poisson_arrivals(trace: RateTrace, duration_s: float, rng: random.Random) -> Iterator[float]:
    """Send offsets (s from start) of a Poisson process whose rate follows `trace`, until `duration_s`.

    Time rescaling: each gap is a unit-mean exponential amount of "expected arrivals", spent at
    the rate of whichever pieces it crosses. For a constant rate that is exactly exponential
    inter-arrival times with mean 1/rate; a rate change mid-gap is honoured (memorylessness).
    """
    t = 0.0
    need = rng.expovariate(1.0)
    for _, end, rate in trace.segments(duration_s):
        while rate > 0 and t + need / rate < end:
            t += need / rate
            yield t
            need = rng.expovariate(1.0)
        need -= rate * (end - t)
        t = end


def parse_rate_trace(text: str, source: str, bin_s: float = 1.0) -> RateTrace:
    """Read a `t_s,rate_rps` CSV or a `TIMESTAMP,...` arrivals CSV; errors name `source` and the line."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    cells = tuple(h.strip() for h in header or [])
    if cells[:1] and cells[0].upper() == TIMESTAMP_COLUMN:
        return RateTrace.from_timestamps(_timestamps(rows, source), bin_s)
    if cells != TRACE_HEADER:
        raise LoadgenInputError(f"{source}: line 1: expected the header 't_s,rate_rps' (rate rows) or a first "
                                f"column 'TIMESTAMP' (arrival times), got {','.join(header or [])!r}")
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


def _timestamps(rows: Iterator[list[str]], source: str) -> list[float]:
    """Seconds since the first arrival; a TIMESTAMP is an ISO date-time or a number of seconds."""
    times: list[float] = []
    first: datetime | None = None
    for lineno, row in enumerate(rows, start=2):
        if not "".join(row).strip():
            continue
        cell = row[0].strip()
        try:
            t = float(cell)
        except ValueError:
            try:
                when = datetime.fromisoformat(cell.replace("Z", "+00:00"))
                when = when if when.tzinfo else when.replace(tzinfo=UTC)
            except ValueError:
                raise LoadgenInputError(f"{source}: line {lineno}: TIMESTAMP must be a date-time like "
                                        f"2023-11-16 18:15:46.68 or a number of seconds, got {cell!r}") from None
            first = first or when
            t = (when - first).total_seconds()
        if not math.isfinite(t):
            raise LoadgenInputError(f"{source}: line {lineno}: TIMESTAMP must be finite, got {cell!r}")
        if times and t < times[-1]:
            raise LoadgenInputError(f"{source}: line {lineno}: TIMESTAMP {cell} is before the previous row's; "
                                    "sort the file by time")
        times.append(t)
    if len(times) < 2 or times[-1] <= times[0]:
        raise LoadgenInputError(f"{source}: need at least two arrivals at different times after the header")
    return times


def bundled_rate_traces() -> dict[str, Path]:
    """Rate traces shipped in configs/load/, by file stem."""
    from configs import CONFIG_DIR

    return {p.stem: p for p in sorted((CONFIG_DIR / "load").glob("*.csv"))}


def resolve_rate_trace(name_or_path: str | Path) -> Path:
    """A CSV path, or the name of a bundled trace (`azure_llm_2023_conv`)."""
    p = Path(name_or_path)
    bundled = bundled_rate_traces()
    if p.exists() or (str(name_or_path) not in bundled and (p.suffix or len(p.parts) > 1)):
        return p  # a path: reading it says what is wrong
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    raise LoadgenInputError(f"rate trace {str(name_or_path)!r} not found: give a CSV path ('t_s,rate_rps' rows or a "
                            f"'TIMESTAMP' column) or one of: {', '.join(bundled) or '(none bundled)'}")


def load_rate_trace(name_or_path: str | Path, rate_scale: float = 1.0, time_scale: float = 1.0) -> RateTrace:
    """Read a rate trace (bundled name or path) and scale it; errors say file, line and what to do."""
    p = resolve_rate_trace(name_or_path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise LoadgenInputError(f"{p}: cannot read the rate trace: {exc.strerror or exc}") from None
    trace = parse_rate_trace(text, str(p))
    if not (rate_scale > 0 and time_scale > 0 and math.isfinite(rate_scale) and math.isfinite(time_scale)):
        raise LoadgenInputError(f"--rate-scale and --time-scale must be positive numbers, got {rate_scale} and {time_scale}")
    return trace.scaled(rate_scale, time_scale)
