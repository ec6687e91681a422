"""Predicted p95 latency of one replica: Poisson arrivals, greedy dynamic batching.

Model (the one the replay simulator in controller/planning/replay.py implements, so the two can be
compared): requests arrive as a Poisson process of rate λ at a replica with a FIFO queue.
Whenever the server is free and requests wait, it takes min(waiting, B) of them as one batch
(work-conserving dynamic batching with no extra wait, like Triton's dynamic batcher with
`max_queue_delay 0`); a batch of b requests takes the deterministic time S(b) from the
performance model. This is the bulk-service queue M/D^(b)/1 with batch-size-dependent
service, and a plain M/D/1 when B = 1.

Why this and not M/D/1 or M/G/1 at batch level: at the loads the planner chooses, batches
are partly filled, so neither "always full batches" nor "always batch 1" holds; the bulk
queue captures both ends. We solve it numerically, not by a heavy-traffic formula:

1. Embedded chain at batch completions: X = requests waiting just after a completion.
   X = 0 → the next arrival is served alone (b = 1); X = n ≥ 1 → b = min(n, B), and
   X' = n − b + Poisson(λ·S(b)). Solved exactly on states 0..N (N beyond the SLA horizon;
   the rare tail is lumped in N, so only latencies far above the SLA are affected).
2. Sojourn of an arrival (PASTA): it lands in the idle period after X = 0 (served at once,
   S(1)) or at a uniform point u of a batch started from state n; with q = n − b +
   Poisson(λu) requests ahead it waits the residual S(b) − u, then ⌊q/B⌋ full batches, then
   its own batch, whose size is (q mod B) + 1 plus the requests expected to arrive during its
   wait, capped at B (fluid approximation, S interpolated linearly in b; it overstates the
   own batch slightly, so the prediction errs on the safe side).
3. p95 = the 0.95 quantile of that mixture (u on a 24-point grid).

Validated against the discrete-event simulator (bench/policies_bench.py prints the relative
error per case; tests/test_replay.py checks it on fixed cases).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve
from scipy.special import gammaln

_U_GRID = 24


def _pois_pmf(k: np.ndarray, mean: np.ndarray) -> np.ndarray:
    mean = np.maximum(mean, 1e-300)
    return np.exp(k * np.log(mean) - mean - gammaln(k + 1.0))


def _state_bound(service_ms: Sequence[float], horizon_ms: float) -> int:
    big_b = len(service_ms)
    batches = math.ceil(horizon_ms / service_ms[-1]) + 6
    return int(min(1200, max(4 * big_b, big_b * batches + big_b)))


def _interp_service(service: np.ndarray, b: np.ndarray) -> np.ndarray:
    """S at fractional batch sizes b ∈ [1, B] (linear between measured integer sizes)."""
    return np.interp(b, np.arange(1, len(service) + 1), service)


def _embedded_chain(lam: float, s: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stationary law `pi` of the queue just after batch completions (states 0..n_max, tail lumped
    into n_max), with `b_of[n]` the batch started from state n and `n0[n]` the requests left waiting."""
    big_b = len(s)
    states = np.arange(n_max + 1)
    b_of = np.clip(states, 1, big_b)  # batch size started from state n (n = 0 → 1)
    n0 = np.where(states == 0, 0, states - b_of)  # waiting once the batch has started
    pmf = {}
    for b in range(1, big_b + 1):
        pmf[b] = _pois_pmf(np.arange(n_max + 1.0), np.asarray(lam * s[b - 1]))
    p = np.zeros((n_max + 1, n_max + 1))
    for n in range(n_max + 1):
        row = pmf[int(b_of[n])][: n_max + 1 - n0[n]]
        p[n, n0[n]: n0[n] + len(row)] = row
        p[n, n_max] += max(0.0, 1.0 - row.sum())
    a = p.T - np.eye(n_max + 1)
    a[-1, :] = 1.0
    rhs = np.zeros(n_max + 1)
    rhs[-1] = 1.0
    # sparse LU (single-threaded): dense LAPACK threads contend badly on a shared machine
    pi = np.clip(spsolve(csc_matrix(a), rhs), 0.0, None)
    return pi / pi.sum(), b_of, n0


@lru_cache(maxsize=200_000)
def _quantile_cached(rate_rps: float, service_ms: tuple[float, ...], horizon_ms: float, q: float) -> float:
    s = np.asarray(service_ms, dtype=float)
    big_b = len(s)
    lam = rate_rps / 1000.0  # per ms
    if lam <= 0.0:
        return float(s[0])
    if lam * s[-1] >= big_b:
        return math.inf
    n_max = _state_bound(service_ms, horizon_ms)
    pi, b_of, n0 = _embedded_chain(lam, s, n_max)

    # Time-average weights of each batch period and of the idle period.
    s_b = s[b_of - 1]
    idle_w = pi[0] / lam
    busy_w = pi * s_b
    total = idle_w + busy_w.sum()
    # Arrival at fraction u of a batch started from state n, with k arrivals since its start.
    u_frac = (np.arange(_U_GRID) + 0.5) / _U_GRID
    u = s_b[:, None] * u_frac[None, :]  # (n, U)
    k_max = int(lam * s[-1] + 8.0 * math.sqrt(lam * s[-1] + 1.0) + 8)
    ks = np.arange(k_max + 1)
    pk = _pois_pmf(ks[None, None, :].astype(float), lam * u[:, :, None])  # (n, U, K)
    weight = (busy_w / total / _U_GRID)[:, None, None] * pk
    ahead = np.minimum(n0[:, None, None] + ks[None, None, :], n_max)
    full_before = ahead // big_b
    wait = (s_b[:, None] - u)[:, :, None] + full_before * s[-1]
    already = (ahead % big_b) + 1
    room = big_b - already  # later arrivals that can still join the tagged request's batch
    joiners = np.minimum(room, lam * wait)
    sojourn = wait + _interp_service(s, already + joiners)

    values = np.concatenate([[s[0]], sojourn.ravel()])
    weights = np.concatenate([[idle_w / total], weight.ravel()])
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    cum /= cum[-1]
    idx = int(np.searchsorted(cum, q))
    return float(values[order][min(idx, len(values) - 1)])


def sojourn_quantile_ms(rate_rps: float, service_ms: Sequence[float], q: float = 0.95,
                        horizon_ms: float | None = None) -> float:
    """q-quantile of request latency (queueing + batch service) at a replica.

    `service_ms[b-1]` = S(b), the batch latency for b = 1..B (B = the replica's max batch).
    `horizon_ms` bounds the latencies that must be exact (default 40 full batches).
    """
    service = tuple(float(x) for x in service_ms)
    if not service or min(service) <= 0:
        raise ValueError(f"service times must be positive, got {service_ms}")
    horizon = float(horizon_ms) if horizon_ms is not None else 40.0 * service[-1]
    return _quantile_cached(round(float(rate_rps), 9), service, horizon, q)


def p95_ms(rate_rps: float, service_ms: Sequence[float], horizon_ms: float | None = None) -> float:
    return sojourn_quantile_ms(rate_rps, service_ms, 0.95, horizon_ms)


# An SLA longer than this many full batches adds no capacity worth computing: at that depth the
# queue already runs within ~2 % of saturation, and the exact chain would need thousands of
# states (an SLA of seconds took minutes to plan). Capping it keeps rmax on the feasible side.
SLA_CAP_BATCHES = 15.0


@lru_cache(maxsize=100_000)
def _max_rate_cached(service: tuple[float, ...], sla_ms: float, rel_tol: float) -> float:
    big_b = len(service)
    sla_ms = min(sla_ms, SLA_CAP_BATCHES * service[-1])
    if p95_ms(1e-9, service, sla_ms) > sla_ms:
        return 0.0
    lo, hi = 0.0, big_b * 1000.0 / service[-1]
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if p95_ms(mid, service, sla_ms) <= sla_ms:
            lo = mid
        else:
            hi = mid
    return lo


def max_rate_rps(service_ms: Sequence[float], sla_ms: float, rel_tol: float = 2e-3) -> float:
    """Largest Poisson rate at which the replica's predicted p95 stays ≤ `sla_ms` (0 if none).

    Bisection on the (monotone) p95; the result is on the feasible side, so a replica loaded
    up to it meets the SLA in the model.
    """
    return _max_rate_cached(tuple(float(x) for x in service_ms), float(sla_ms), rel_tol)


# ---- energy per request under the same batching ---------------------------------------------
_ENERGY_GRID = 33  # utilisation points per replica type; e(ρ) is smooth, interpolation error < 0.5 %


def _energy_at(lam: float, s: np.ndarray, batch_j: np.ndarray) -> float:
    pi, b_of, _ = _embedded_chain(lam, s, _state_bound(tuple(s), 40.0 * s[-1]))
    return float(pi @ batch_j[b_of - 1]) / float(pi @ b_of)


@lru_cache(maxsize=4096)
def _energy_grid(service_ms: tuple[float, ...], busy_w: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Energy per request (J) at utilisations ρ = λ·S(B)/B on a grid over [0, 1)."""
    s = np.asarray(service_ms, dtype=float)
    batch_j = np.asarray(busy_w, dtype=float) * s / 1000.0  # energy of one batch of b
    rho = np.linspace(0.0, 0.995, _ENERGY_GRID)
    out = np.array([batch_j[0], *(_energy_at(r * len(s) / s[-1], s, batch_j) for r in rho[1:])])
    return rho, out


def energy_per_request_j(rate_rps: float, service_ms: Sequence[float], busy_w: Sequence[float],
                         exact: bool = False) -> float:
    """Busy energy per request (J) of a replica at `rate_rps` under greedy batching.

    `busy_w[b-1]` = busy power while a batch of b runs. Each completion of the embedded chain
    above serves one batch, so energy/request = E[P(b)·S(b)] / E[b] over the stationary batch
    sizes: between P(1)·S(1) when requests come alone and P(B)·S(B)/B at full batches. Using
    the full-batch value at every rate understates the dynamic energy at partial load by up to
    a factor 4 (docs/planner.md); the replay simulator agrees with this one within 1 %.
    Interpolated on a per-replica-type grid of utilisations unless `exact` (one chain solve).
    """
    service, power = tuple(float(x) for x in service_ms), tuple(float(x) for x in busy_w)
    if len(service) == 1:
        return power[0] * service[0] / 1000.0
    s = np.asarray(service)
    rho = rate_rps * service[-1] / 1000.0 / len(service)
    if exact and 0.0 < rho < 0.995:
        return _energy_at(rate_rps / 1000.0, s, np.asarray(power) * s / 1000.0)
    grid, e = _energy_grid(service, power)
    return float(np.interp(rho, grid, e))
