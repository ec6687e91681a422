"""What a load run measured: counters while it runs (`LoadStats`) and the final `LoadResult`.

Pure logic, no I/O: the generator records one outcome per request; the CLI and the demo read the
result. Errors are kept by kind (`http_503`, `http_400`, `timeout`, `connection_refused`, ...)
because "it failed" is not actionable, and 503 with Retry-After (the router's saturation answer)
must be told apart from a broken request (4xx) or a dead server.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

ERROR_EXAMPLE_CHARS = 200


@dataclass
class LoadStats:
    """Live counters of one run; `offered == sent + dropped_client_side` at all times."""

    offered: int = 0
    sent: int = 0
    dropped_client_side: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    retry_after_seen: int = 0
    variants: Counter[str] = field(default_factory=Counter)
    ok_latencies_ms: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    max_send_lag_ms: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def record_drop(self) -> None:
        self.offered += 1
        self.dropped_client_side += 1

    def record_send(self, lag_s: float) -> None:
        self.offered += 1
        self.sent += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_send_lag_ms = max(self.max_send_lag_ms, lag_s * 1000.0)

    def record_ok(self, latency_ms: float, variant: str | None) -> None:
        self.in_flight -= 1
        self.ok += 1
        self.ok_latencies_ms.append(latency_ms)
        if variant is not None:
            self.variants[variant] += 1

    def record_error(self, kind: str, detail: str, retry_after: bool = False) -> None:
        self.in_flight -= 1
        self.errors[kind] += 1
        self.error_examples.setdefault(kind, detail[:ERROR_EXAMPLE_CHARS])
        self.retry_after_seen += int(retry_after)


def latency_summary(latencies_ms: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean/max in ms (linear interpolation, numpy's default); None when nothing succeeded."""
    if not latencies_ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    arr = np.asarray(latencies_ms, dtype=float)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(arr.mean()), "max": float(arr.max())}


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
    latency_ms: dict[str, float | None]
    max_in_flight: int
    max_send_lag_ms: float

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
                   requested_rate_rps: float, concurrency: int, timeout_s: float) -> "LoadResult":
        return cls(
            url=url, service=service, duration_s=duration_s, elapsed_s=elapsed_s,
            requested_rate_rps=requested_rate_rps, concurrency=concurrency, timeout_s=timeout_s,
            offered=stats.offered, sent=stats.sent, dropped_client_side=stats.dropped_client_side, ok=stats.ok,
            errors=dict(sorted(stats.errors.items())), error_examples=dict(sorted(stats.error_examples.items())),
            retry_after_seen=stats.retry_after_seen, variants=dict(sorted(stats.variants.items())),
            latency_ms=latency_summary(stats.ok_latencies_ms),
            max_in_flight=stats.max_in_flight, max_send_lag_ms=stats.max_send_lag_ms,
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
            "variants": self.variants,
            "max_in_flight": self.max_in_flight,
            "max_send_lag_ms": self.max_send_lag_ms,
        }
