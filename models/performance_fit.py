"""Fit per-variant latency / power / memory coefficients to measured points (pure, no I/O).

Latency of one batch of `b` items on a share `f` of the SMs (docs/performance-model.md):

    lat(f, b) = a + d·b + c·b / f

`a` is the fixed per-call cost (Python + kernel launches: it does not shrink with more SMs),
`c·b/f` the SM-parallel work (c = ms per item on the whole GPU), `d·b` per-item work that
does not scale with SMs. Variants measured on several SM shares get the three coefficients
by non-negative least squares on relative residuals.

Variants measured only on the whole GPU cannot show how they slow down on a slice. Their
per-item work `s = c + d` is estimated from their measured dynamic energy per item on the
whole GPU (`E`, J): `s = κ·E^β`, a power law fitted across the slice-measured variants,
because energy counts the work the SMs did even when a small batch's latency is hidden
behind launch overhead (their batch-1 vs batch-8 latencies are too noisy for a slope: some
even go down with the batch). `s` is split into `c` and `d` with the slice-measured
variants' median share, and `a` is fitted to the variant's own whole-GPU points. Without
energy data (a profiler with no meter) the slope of the variant's own points is used.

Dynamic power (above idle) of a busy slice:

    P(f, b) = p0 + k · busy(f, b),   busy = c·b / lat(f, b)

`busy` is the average share of the whole GPU's SMs doing work during a batch, `p0` the power
of host-driven activity (memory, clocks, launches) and `k` the power of a fully busy GPU.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import median
from typing import Iterable

import numpy as np
from scipy.optimize import nnls

from models.profile_points import ProfilePoint


@dataclass(frozen=True)
class VariantFit:
    """Everything the performance model needs about one variant on the reference GPU."""

    variant: str
    a_ms: float
    d_ms: float
    c_ms: float
    p0_w: float
    k_w: float
    mem0_gib: float
    mem_per_item_gib: float
    p99_ratio: float
    latency_source: str  # "slices" (several SM shares), "whole-gpu+energy" or "whole-gpu+slope"
    power_source: str  # "measured", "family:<variant>" or "pooled"

    def latency_ms(self, f: float, batch: float) -> float:
        return self.a_ms + self.d_ms * batch + self.c_ms * batch / f

    def busy_share(self, f: float, batch: float) -> float:
        return self.c_ms * batch / self.latency_ms(f, batch)

    def power_w(self, f: float, batch: float) -> float:
        return self.p0_w + self.k_w * self.busy_share(f, batch)


@dataclass(frozen=True)
class Prior:
    """What variants without slice data borrow from those with it."""

    parallel_share: float  # c / (c + d), median over slice-measured variants
    work_scale: float | None  # κ in s = κ·E^β (ms per item, E in J); None: no energy data
    work_exponent: float  # β
    p0_w: float
    k_w: float


def _weighted_nnls(rows: list[list[float]], y: list[float]) -> np.ndarray:
    """Non-negative least squares on relative residuals (weights 1/y)."""
    A = np.asarray(rows, dtype=float)
    yv = np.asarray(y, dtype=float)
    w = 1.0 / np.maximum(yv, 1e-9)
    coef, _ = nnls(A * w[:, None], yv * w)
    return coef


def energy_per_item_j(points: list[ProfilePoint]) -> float | None:
    """Dynamic energy per item on the whole GPU at the largest measured batch (None if unmetered)."""
    full = [p for p in points if p.sm_fraction == 1.0 and p.dynamic_power_w is not None]
    if not full:
        return None
    top = max(p.batch for p in full)
    vals = [p.dynamic_power_w * p.lat_mean_ms / 1000.0 / p.batch for p in full if p.batch == top]  # type: ignore[operator]
    return float(np.mean(vals))


def _fit_latency(points: list[ProfilePoint], prior: Prior | None) -> tuple[float, float, float, str]:
    y = [p.lat_mean_ms for p in points]
    if len({p.sm_fraction for p in points}) >= 2:
        a, d, c = _weighted_nnls([[1.0, p.batch, p.batch / p.sm_fraction] for p in points], y)
        return float(a), float(d), float(c), "slices"
    f = points[0].sm_fraction
    energy = energy_per_item_j(points)
    if prior is not None and prior.work_scale is not None and energy:
        s, source = prior.work_scale * energy ** prior.work_exponent, "whole-gpu+energy"
        (a,) = _weighted_nnls([[1.0] for _ in points], [max(yi - s * p.batch / f, 0.0) for yi, p in zip(y, points)])
    elif len({p.batch for p in points}) > 1:
        a, s = _weighted_nnls([[1.0, p.batch / f] for p in points], y)
        source = "whole-gpu+slope"
    else:
        a, s, source = min(y), 0.0, "whole-gpu+slope"
    share = prior.parallel_share if prior else 1.0
    return float(a), float(s * (1 - share)), float(s * share), source


def _fit_power(points: list[ProfilePoint], lat: VariantFit, prior: Prior | None) -> tuple[float, float] | None:
    """`p0`, `k` by NNLS; with whole-GPU points only, `p0` is the prior's and only `k` is fitted.

    Two whole-GPU points barely move `busy`, so a free `p0` soaks up everything (a variant
    at the power limit came out as a constant 550 W on a 1g slice in leave-one-out).
    """
    pts = [p for p in points if p.dynamic_power_w is not None]
    if not pts:
        return None
    y = [p.dynamic_power_w for p in pts]
    busy = [lat.busy_share(p.sm_fraction, p.batch) for p in pts]
    if lat.latency_source != "slices" and prior is not None:
        (k,) = _weighted_nnls([[b] for b in busy], [max(yi - prior.p0_w, 1e-3) for yi in y])  # type: ignore[operator]
        return prior.p0_w, float(k)
    if len({round(b, 6) for b in busy}) < 2:
        return float(median(y)), 0.0  # type: ignore[type-var]
    p0, k = _weighted_nnls([[1.0, b] for b in busy], y)  # type: ignore[misc]
    return float(p0), float(k)


def _fit_memory(points: list[ProfilePoint]) -> tuple[float, float]:
    if len({p.batch for p in points}) < 2:
        return max(p.mem_gib for p in points), 0.0
    m0, m1 = _weighted_nnls([[1.0, p.batch] for p in points], [max(p.mem_gib, 1e-3) for p in points])
    return float(m0), float(m1)


def fit_variant(variant: str, points: list[ProfilePoint], prior: Prior | None) -> VariantFit:
    a, d, c, lsrc = _fit_latency(points, prior)
    m0, m1 = _fit_memory(points)
    p99 = float(median(p.lat_p99_ms / p.lat_p50_ms for p in points if p.lat_p50_ms > 0))
    fit = VariantFit(variant, a, d, c, 0.0, 0.0, m0, m1, p99, lsrc, "pooled")
    power = _fit_power(points, fit, prior)
    if power is not None:
        return VariantFit(variant, a, d, c, power[0], power[1], m0, m1, p99, lsrc, "measured")
    return fit


def fit_prior(fits: Iterable[VariantFit], groups: dict[str, list[ProfilePoint]]) -> Prior | None:
    """Pool the slice-measured variants: latency split, work-vs-energy law, power coefficients."""
    fits = list(fits)
    sliced = [f for f in fits if f.latency_source == "slices" and f.c_ms + f.d_ms > 0]
    powered = [f for f in fits if f.power_source == "measured"]
    if not sliced and not powered:
        return None
    share = median(f.c_ms / (f.c_ms + f.d_ms) for f in sliced) if sliced else 1.0
    work = [(energy_per_item_j(groups[f.variant]), f.c_ms + f.d_ms) for f in sliced]
    work = [(e, s) for e, s in work if e]
    scale, exponent = None, 1.0
    if len(work) >= 2:
        exponent, log_scale = np.polyfit(np.log([e for e, _ in work]), np.log([s for _, s in work]), 1)
        scale = float(np.exp(log_scale))
    elif work:
        scale = work[0][1] / work[0][0]
    p0 = median(f.p0_w for f in powered) if powered else 0.0
    k = median(f.k_w for f in powered) if powered else 0.0
    return Prior(float(share), scale, float(exponent), float(p0), float(k))


def _borrow_power(fit: VariantFit, donors: list[VariantFit], prior: Prior | None) -> VariantFit:
    """Power for a variant measured without a meter: nearest metered family member, else pooled."""
    family = fit.variant.split(":")[0]
    kin = [f for f in donors if f.variant.split(":")[0] == family]
    if kin:
        work = fit.c_ms + fit.d_ms
        donor = min(kin, key=lambda f: abs(np.log((f.c_ms + f.d_ms + 1e-6) / (work + 1e-6))))
        p0, k, src = donor.p0_w, donor.k_w, f"family:{donor.variant}"
    else:
        p0, k, src = (prior.p0_w, prior.k_w, "pooled") if prior else (0.0, 0.0, "pooled")
    return VariantFit(fit.variant, fit.a_ms, fit.d_ms, fit.c_ms, p0, k, fit.mem0_gib,
                      fit.mem_per_item_gib, fit.p99_ratio, fit.latency_source, src)


def group_points(points: Iterable[ProfilePoint]) -> dict[str, list[ProfilePoint]]:
    by_variant: dict[str, list[ProfilePoint]] = defaultdict(list)
    for p in points:
        by_variant[p.variant].append(p)
    return dict(by_variant)


def fit_all(points: Iterable[ProfilePoint], prior_from: Iterable[str] | None = None) -> dict[str, VariantFit]:
    """Fit every variant: slice-measured ones first, then the rest borrow from them.

    `prior_from` restricts which variants the prior is pooled from (leave-one-out checks).
    """
    groups = group_points(points)
    first = {v: fit_variant(v, pts, None) for v, pts in groups.items()}
    pool = set(prior_from) if prior_from is not None else set(first)
    prior = fit_prior([f for v, f in first.items() if v in pool], groups)
    fits = {v: (f if f.latency_source == "slices" else fit_variant(v, groups[v], prior)) for v, f in first.items()}
    donors = [f for f in fits.values() if f.power_source == "measured"]
    return {v: (f if f.power_source == "measured" else _borrow_power(f, donors, prior)) for v, f in sorted(fits.items())}
