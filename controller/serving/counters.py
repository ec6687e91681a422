"""Cumulative request counters and latency histograms of the serving path.

Why cumulative and mergeable: there are several ingress replicas, any of which may restart at
any moment. Each keeps `ServingCounters` that only grow and publishes them, keyed by its own
id; the controller sums the replicas and subtracts its previous reading to get an interval
(like Prometheus counters and `rate()`), so no replica holds state the accounting depends on,
and a restarted replica simply starts a new series.

Latency is kept in log-spaced buckets (each 2^(1/16) ≈ 4.4 % wider than the previous, from
0.1 ms): sparse, exactly mergeable, and a quantile read from them is within one bucket (≤ 4.4 %)
of the true value — the HdrHistogram idea with a fixed relative precision.
Pure: no Ray, no I/O.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

MIN_S = 1e-4  # bucket 0 holds everything up to 0.1 ms
STEPS_PER_DOUBLING = 16
_LOG_RATIO = math.log(2.0) / STEPS_PER_DOUBLING


def bucket_of(seconds: float) -> int:
    if seconds <= MIN_S:
        return 0
    return max(1, math.ceil(math.log(seconds / MIN_S) / _LOG_RATIO - 1e-9))


def bucket_upper_s(index: int) -> float:
    """Upper bound of bucket `index` in seconds."""
    return MIN_S * math.exp(index * _LOG_RATIO)


@dataclass
class LatencyHistogram:
    """Counts per log-spaced bucket, their number and the sum of the observed values."""

    counts: Counter[int] = field(default_factory=Counter)
    total: int = 0
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bucket_of(max(0.0, seconds))] += 1
        self.total += 1
        self.sum_s += max(0.0, seconds)

    def merged(self, other: LatencyHistogram) -> LatencyHistogram:
        return LatencyHistogram(self.counts + other.counts, self.total + other.total, self.sum_s + other.sum_s)

    def minus(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """What was observed since `earlier` (a previous reading of the same series)."""
        counts = Counter({b: n - earlier.counts.get(b, 0) for b, n in self.counts.items()})
        return LatencyHistogram(+counts, max(0, self.total - earlier.total), max(0.0, self.sum_s - earlier.sum_s))

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds (upper bound of its bucket), None when empty."""
        if self.total <= 0:
            return None
        rank = q * self.total
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return bucket_upper_s(b)
        return bucket_upper_s(max(self.counts))

    def count_le(self, bound_s: float) -> int:
        """Observations whose bucket lies wholly at or below `bound_s` (Prometheus `le` buckets)."""
        return sum(n for b, n in self.counts.items() if bucket_upper_s(b) <= bound_s * (1 + 1e-9))


def _sum_hist(hists: Iterable[LatencyHistogram]) -> LatencyHistogram:
    out = LatencyHistogram()
    for h in hists:
        out = out.merged(h)
    return out


@dataclass
class ServingCounters:
    """What one ingress replica (or the sum of all) has served since it started."""

    ok: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (service, variant, replica) -> n
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service, kind) -> n
    # From the moment the HTTP request reached the ingress to its response, per (service, variant).
    latency: dict[tuple[str, str], LatencyHistogram] = field(default_factory=dict)
    # On the slice (batching wait + queue + service: what the SLA bounds), per (service, replica).
    slice_latency: dict[tuple[str, str], LatencyHistogram] = field(default_factory=dict)
    inflight: Counter[str] = field(default_factory=Counter)  # service -> requests in flight now (a gauge)

    def record_ok(self, service: str, variant: str, replica: str, latency_s: float, slice_s: float) -> None:
        self.ok[service, variant, replica] += 1
        self.latency.setdefault((service, variant), LatencyHistogram()).observe(latency_s)
        self.slice_latency.setdefault((service, replica), LatencyHistogram()).observe(slice_s)

    def record_failed(self, service: str, kind: str) -> None:
        self.failed[service, kind] += 1

    def merged(self, other: ServingCounters) -> ServingCounters:
        keys = set(self.latency) | set(other.latency)
        skeys = set(self.slice_latency) | set(other.slice_latency)
        empty = LatencyHistogram()
        return ServingCounters(
            self.ok + other.ok, self.failed + other.failed,
            {k: self.latency.get(k, empty).merged(other.latency.get(k, empty)) for k in keys},
            {k: self.slice_latency.get(k, empty).merged(other.slice_latency.get(k, empty)) for k in skeys},
            self.inflight + other.inflight,
        )

    def minus(self, earlier: ServingCounters) -> ServingCounters:
        """The interval since `earlier`; the in-flight gauge is this reading's."""
        empty = LatencyHistogram()
        return ServingCounters(
            Counter({k: n - earlier.ok.get(k, 0) for k, n in self.ok.items() if n > earlier.ok.get(k, 0)}),
            Counter({k: n - earlier.failed.get(k, 0) for k, n in self.failed.items() if n > earlier.failed.get(k, 0)}),
            {k: h.minus(earlier.latency.get(k, empty)) for k, h in self.latency.items()},
            {k: h.minus(earlier.slice_latency.get(k, empty)) for k, h in self.slice_latency.items()},
            Counter(self.inflight),
        )

    # -- reading an interval -----------------------------------------------------------------
    def requests(self, service: str | None = None) -> int:
        return sum(n for (s, _, _), n in self.ok.items() if service in (None, s))

    def failures(self, service: str | None = None) -> int:
        return sum(n for (s, _), n in self.failed.items() if service in (None, s))

    def failures_by_kind(self, service: str | None = None) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (s, kind), n in self.failed.items():
            if service in (None, s):
                out[kind] += n
        return dict(out)

    def by_variant(self, service: str | None = None) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (s, v, _), n in self.ok.items():
            if service in (None, s):
                out[v] += n
        return dict(out)

    def p_ms(self, q: float, service: str | None = None, *, on_slice: bool = True) -> float | None:
        """q-quantile in ms on the slice (default) or at the ingress, over one or all services."""
        hists = self.slice_latency if on_slice else self.latency
        h = _sum_hist(h for (s, _), h in hists.items() if service in (None, s))
        v = h.quantile(q)
        return None if v is None else v * 1000.0


def sum_counters(parts: Iterable[ServingCounters]) -> ServingCounters:
    out = ServingCounters()
    for p in parts:
        out = out.merged(p)
    return out
