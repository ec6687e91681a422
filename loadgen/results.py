"""What a load run measured: counters while it runs (`LoadStats`) and the final `LoadResult`.

Pure logic, no I/O: the generator records one outcome per request; the CLI and the demo read the
result. Errors are kept by kind (`http_503`, `http_400`, `timeout`, `connection_refused`, ...)
because "it failed" is not actionable, and 503 with Retry-After (the router's saturation answer)
must be told apart from a broken request (4xx) or a dead server.

Two latencies per successful request (wrk2's lesson on coordinated omission): `latency` runs from
the request's *scheduled* send time, so a client that fell behind (event-loop lag, a stalled
connection pool) still charges the wait to the system under test, as a real user would see it;
`service time` runs from the moment the request was actually sent (the old figure). Every outcome
is also booked to the second of its scheduled send, which gives the per-second timeline.

Several services at once: each has its own `LoadStats` whose `parent` is the run's total, so every
figure exists per service and overall (`MultiLoadResult`) from one set of recordings.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

ERROR_EXAMPLE_CHARS = 200
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))
SUMMARY_KEYS = ("min", *(name for name, _ in PERCENTILES), "max", "mean")


@dataclass
class SecondStats:
    """What happened to the requests scheduled within one second of the run."""

    offered: int = 0
    sent: int = 0
    dropped_client_side: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)  # of ok requests, from the scheduled send
    service_ms: list[float] = field(default_factory=list)  # of ok requests, from the actual send


@dataclass
class LoadStats:
    """Live counters of one run, kept per scheduled second; the run's totals are their sums, so
    `offered == sent + dropped_client_side` holds at all times, per second and overall.

    `parent` (the run's total over several services) records everything this one records."""

    seconds: dict[int, SecondStats] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    retry_after_seen: int = 0
    variants: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    max_send_lag_ms: float = 0.0
    parent: LoadStats | None = field(default=None, repr=False)

    def _total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.seconds.values())

    @property
    def offered(self) -> int:
        return self._total("offered")

    @property
    def sent(self) -> int:
        return self._total("sent")

    @property
    def dropped_client_side(self) -> int:
        return self._total("dropped_client_side")

    @property
    def ok(self) -> int:
        return self._total("ok")

    @property
    def errors(self) -> Counter[str]:
        return sum((s.errors for s in self.seconds.values()), Counter())

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def _second(self, second: int) -> SecondStats:
        return self.seconds.setdefault(second, SecondStats())

    def record_drop(self, second: int) -> None:
        s = self._second(second)
        s.offered += 1
        s.dropped_client_side += 1
        if self.parent is not None:
            self.parent.record_drop(second)

    def record_send(self, second: int, lag_s: float) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_send_lag_ms = max(self.max_send_lag_ms, lag_s * 1000.0)
        s = self._second(second)
        s.offered += 1
        s.sent += 1
        if self.parent is not None:
            self.parent.record_send(second, lag_s)

    def record_ok(self, second: int, latency_ms: float, service_ms: float, variant: str | None) -> None:
        self.in_flight -= 1
        s = self._second(second)
        s.ok += 1
        s.latencies_ms.append(latency_ms)
        s.service_ms.append(service_ms)
        if variant is not None:
            self.variants[variant] += 1
        if self.parent is not None:
            self.parent.record_ok(second, latency_ms, service_ms, variant)

    def record_error(self, second: int, kind: str, detail: str, retry_after: bool = False) -> None:
        self.in_flight -= 1
        self._second(second).errors[kind] += 1
        self.error_examples.setdefault(kind, detail[:ERROR_EXAMPLE_CHARS])
        self.retry_after_seen += int(retry_after)
        if self.parent is not None:
            self.parent.record_error(second, kind, detail, retry_after)


def latency_summary(latencies_ms: list[float]) -> dict[str, float | None]:
    """min/p50/p90/p95/p99/p99.9/max/mean in ms (linear interpolation, numpy's default); None when empty."""
    if not latencies_ms:
        return dict.fromkeys(SUMMARY_KEYS)
    arr = np.asarray(latencies_ms, dtype=float)
    out: dict[str, float | None] = {"min": float(arr.min())}
    out.update(zip((n for n, _ in PERCENTILES), map(float, np.percentile(arr, [q for _, q in PERCENTILES]))))
    out.update(max=float(arr.max()), mean=float(arr.mean()))
    return out


def _p95(values: list[float]) -> float | None:
    return float(np.percentile(values, 95.0)) if values else None


@dataclass(frozen=True)
class TimelineRow:
    """One second of the run, by scheduled send time: the evidence that a change dropped nothing."""

    second: int
    offered: int
    sent: int
    dropped_client_side: int
    ok: int
    errors: dict[str, int]
    p95_ms: float | None  # from the scheduled send
    p95_service_ms: float | None  # from the actual send

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def timeline_rows(stats: LoadStats, duration_s: float) -> tuple[TimelineRow, ...]:
    """One row per second from 0 to the end of the sending window, idle seconds included."""
    last = max([int(duration_s - 1e-9), *stats.seconds])
    rows = []
    for second in range(last + 1):
        s = stats.seconds.get(second, SecondStats())
        rows.append(TimelineRow(second, s.offered, s.sent, s.dropped_client_side, s.ok, dict(sorted(s.errors.items())),
                                _p95(s.latencies_ms), _p95(s.service_ms)))
    return tuple(rows)


@dataclass(frozen=True)
class LoadResult:
    """The outcome of one run; `to_json()` is what `--json OUT` writes and the demo reads."""

    url: str
    service: str
    duration_s: float
    elapsed_s: float
    requested_rate_rps: float
    concurrency: int
    timeout_s: float
    offered: int
    sent: int
    dropped_client_side: int
    ok: int
    errors: dict[str, int]
    error_examples: dict[str, str]
    retry_after_seen: int
    variants: dict[str, int]
    latency_ms: dict[str, float | None]  # from the scheduled send (coordinated omission corrected)
    service_time_ms: dict[str, float | None]  # from the actual send
    max_in_flight: int
    max_send_lag_ms: float
    timeline: tuple[TimelineRow, ...] = ()

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def offered_rate_rps(self) -> float:
        return self.offered / self.duration_s

    @property
    def achieved_rate_rps(self) -> float:
        """Requests actually sent per second of the sending window (offered minus client-side drops)."""
        return self.sent / self.duration_s

    @property
    def ok_rate_rps(self) -> float:
        """Successful responses per second of the whole run, including the final drain."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @classmethod
    def from_stats(cls, stats: LoadStats, *, url: str, service: str, duration_s: float, elapsed_s: float,
                   requested_rate_rps: float, concurrency: int, timeout_s: float) -> LoadResult:
        seconds = stats.seconds.values()
        return cls(
            url=url, service=service, duration_s=duration_s, elapsed_s=elapsed_s,
            requested_rate_rps=requested_rate_rps, concurrency=concurrency, timeout_s=timeout_s,
            offered=stats.offered, sent=stats.sent, dropped_client_side=stats.dropped_client_side, ok=stats.ok,
            errors=dict(sorted(stats.errors.items())), error_examples=dict(sorted(stats.error_examples.items())),
            retry_after_seen=stats.retry_after_seen, variants=dict(sorted(stats.variants.items())),
            latency_ms=latency_summary([x for s in seconds for x in s.latencies_ms]),
            service_time_ms=latency_summary([x for s in seconds for x in s.service_ms]),
            max_in_flight=stats.max_in_flight, max_send_lag_ms=stats.max_send_lag_ms,
            timeline=timeline_rows(stats, duration_s),
        )

    def to_json(self) -> dict:
        return {
            "url": self.url,
            "service": self.service,
            "duration_s": self.duration_s,
            "elapsed_s": self.elapsed_s,
            "requested_rate_rps": self.requested_rate_rps,
            "offered_rate_rps": self.offered_rate_rps,
            "achieved_rate_rps": self.achieved_rate_rps,
            "ok_rate_rps": self.ok_rate_rps,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "offered": self.offered,
            "sent": self.sent,
            "dropped_client_side": self.dropped_client_side,
            "ok": self.ok,
            "failed": self.failed,
            "errors": self.errors,
            "error_examples": self.error_examples,
            "retry_after_seen": self.retry_after_seen,
            "latency_ms": self.latency_ms,
            "service_time_ms": self.service_time_ms,
            "variants": self.variants,
            "max_in_flight": self.max_in_flight,
            "max_send_lag_ms": self.max_send_lag_ms,
        }


@dataclass(frozen=True)
class MultiLoadResult:
    """A run over one or more services: each service's own result and the total over all of them.

    The total's `service` is the names joined by commas, its `concurrency` the sum of the
    services' bounds (each service has its own, see loadgen/generator.py)."""

    services: dict[str, LoadResult]
    total: LoadResult

    def to_json(self) -> dict:
        """The total's figures at the top level (as a one-service run always wrote them) plus a
        `services` section with each service's."""
        return {**self.total.to_json(), "services": {name: r.to_json() for name, r in self.services.items()}}
