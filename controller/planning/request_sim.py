"""Requests one at a time: one replica's FIFO queue with greedy batching, and the weighted tally
of a replay's requests and energy.

The request-level core of the trace replay (controller/planning/replay.py), kept apart so that
the queueing model (controller/planning/queueing.py) can be checked against it on its own.
"""
from __future__ import annotations

import math

import numpy as np


class Tally:
    """Weighted request and energy accumulator of one policy run."""

    def __init__(self) -> None:
        self.lat: list[np.ndarray] = []
        self.w: list[np.ndarray] = []
        self.acc_sum = 0.0
        self.served = 0.0
        self.lost = 0.0  # requests that found no replica (a stopped node): latency ∞
        self.requests = 0.0
        self.energy_j = 0.0
        self.carbon_g = 0.0
        self.exploration_requests = 0.0
        self.hourly_carbon: list[float] = []

    def add(self, lat: np.ndarray, acc: np.ndarray, weight: float) -> None:
        self.lat.append(lat)
        self.w.append(np.full(len(lat), weight))
        ok = np.isfinite(lat)
        self.acc_sum += float(acc[ok].sum()) * weight
        self.served += float(ok.sum()) * weight
        self.lost += float((~ok).sum()) * weight
        self.requests += len(lat) * weight

    def quantile(self, q: float) -> float:
        lat = np.concatenate(self.lat) if self.lat else np.zeros(1)
        w = np.concatenate(self.w) if self.w else np.ones(1)
        order = np.argsort(lat)
        cum = np.cumsum(w[order])
        return float(lat[order][min(int(np.searchsorted(cum, q * cum[-1])), len(lat) - 1)])

    def over(self, limit_ms: float) -> float:
        lat = np.concatenate(self.lat) if self.lat else np.zeros(1)
        w = np.concatenate(self.w) if self.w else np.ones(1)
        return float(w[lat > limit_ms].sum() / w.sum())


def serve_replica(arrivals: np.ndarray, service_ms: np.ndarray, power_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Latencies (ms) of FIFO requests with greedy batching up to len(service_ms); busy energy (J)."""
    n = len(arrivals)
    lat = np.empty(n)
    big_b = len(service_ms)
    t_free = -math.inf
    energy = 0.0
    i = 0
    while i < n:
        start = arrivals[i] if arrivals[i] > t_free else t_free
        j = int(np.searchsorted(arrivals, start, side="right"))
        j = min(max(j, i + 1), i + big_b)
        b = j - i
        end = start + service_ms[b - 1]
        lat[i:j] = end - arrivals[i:j]
        energy += power_w[b - 1] * service_ms[b - 1] / 1000.0
        t_free = end
        i = j
    return lat, energy


def replica_p95_sim(rate_rps: float, service_ms, seconds: float, rng: np.random.Generator) -> float:
    """Simulated p95 of one replica (for validating controller/planning/queueing.py)."""
    arr = np.sort(rng.uniform(0.0, seconds * 1000.0, rng.poisson(rate_rps * seconds)))
    lat, _ = serve_replica(arr, np.asarray(service_ms, float), np.zeros(len(service_ms)))
    skip = np.searchsorted(arr, 0.05 * seconds * 1000.0)
    return float(np.quantile(lat[skip:], 0.95))
