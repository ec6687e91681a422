"""How far the fitted performance model is from the measured points (pure, no I/O).

Two checks, both over latency and dynamic power of every fp16 (variant, SM share, batch) run:
- in-sample: the model fitted to all points, compared with each point;
- leave-one-out: for each variant that has slice data, its slice points predicted as if it
  had been measured on the whole GPU only (its own whole-GPU points + the prior pooled from
  the *other* slice-measured variants). This is the error to expect for the 12 variants
  that only have whole-GPU data.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Iterable

from models.performance_fit import (
    VariantFit,
    fit_all,
    fit_prior,
    fit_variant,
    group_points,
)
from models.profile_points import ProfilePoint


@dataclass(frozen=True)
class PointError:
    variant: str
    sm_fraction: float
    batch: int
    measured_ms: float
    model_ms: float
    measured_w: float | None
    model_w: float

    @property
    def latency_rel(self) -> float:
        return (self.model_ms - self.measured_ms) / self.measured_ms

    @property
    def power_rel(self) -> float | None:
        if not self.measured_w:
            return None
        return (self.model_w - self.measured_w) / self.measured_w


@dataclass(frozen=True)
class ErrorSummary:
    points: int
    latency_median: float
    latency_worst: float
    power_median: float
    power_worst: float


def _compare(fit: VariantFit, p: ProfilePoint, power_cap_w: float) -> PointError:
    return PointError(p.variant, p.sm_fraction, p.batch, p.lat_mean_ms, fit.latency_ms(p.sm_fraction, p.batch),
                      p.dynamic_power_w, min(fit.power_w(p.sm_fraction, p.batch), power_cap_w))


def in_sample(points: list[ProfilePoint], power_cap_w: float) -> list[PointError]:
    fits = fit_all(points)
    return [_compare(fits[p.variant], p, power_cap_w) for p in points]


def leave_one_out(points: list[ProfilePoint], power_cap_w: float) -> list[PointError]:
    groups = group_points(points)
    first = {v: fit_variant(v, pts, None) for v, pts in groups.items()}
    sliced = [v for v, f in first.items() if f.latency_source == "slices"]
    errors = []
    for v in sliced:
        prior = fit_prior([first[o] for o in sliced if o != v], groups)
        whole = [p for p in groups[v] if p.sm_fraction == 1.0]
        fit = fit_variant(v, whole, prior)
        errors += [_compare(fit, p, power_cap_w) for p in groups[v] if p.sm_fraction < 1.0]
    return errors


def summarize(errors: Iterable[PointError]) -> ErrorSummary:
    errors = list(errors)
    lat = [abs(e.latency_rel) for e in errors]
    pw = [abs(r) for e in errors if (r := e.power_rel) is not None]
    return ErrorSummary(len(errors), median(lat), max(lat), median(pw) if pw else float("nan"),
                        max(pw) if pw else float("nan"))
