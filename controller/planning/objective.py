"""Clover's objective, the ONE place where λ and Clover's normalisation are applied.

Clover (SC'23, docs/background.md §1) maximises

    f = λ·ΔC − (1−λ)·ΔA,   ΔC = (C_base − C)/C_base,   ΔA = (A_base − A)/A_base

where C is the carbon of the configuration (energy × CI × PUE), A its request-weighted
accuracy, and C_base the carbon of the base configuration computed at the *reference*
carbon intensity 250 gCO2/kWh and PUE 1.5 (the artifact's `setup_obj_func(ci_base=250,
pue_base=1.5)`), not at the current intensity. We follow the reference exactly, which means
ΔC depends on the current CI: at CI 500 a configuration using the base's energy has
ΔC = −1. Every consumer (planner, baselines, replay summary) goes through this module, so a
change of normalisation is a one-line change here.

Everything is per unit of time at a constant rate (W → g/h); since the rate is the same for
all configurations compared, this equals Clover's per-request carbon up to a constant factor
that cancels in ΔC.
"""
from __future__ import annotations

from dataclasses import dataclass

REFERENCE_CI = 250.0  # gCO2/kWh, Clover's C_base intensity
REFERENCE_PUE = 1.5
DEFAULT_LAMBDA = 0.1


@dataclass(frozen=True)
class Objective:
    """Clover's objective for one planning window, linear in power and accuracy.

    `base_power_w` is the base configuration's average power (idle included) at the same
    request rate; `base_accuracy` its accuracy. `accuracy_weight` is the window's traffic
    relative to the traffic Base's power was taken at (1 at a constant rate): with a varying
    load the windows are normalised to one reference, so that their objectives add up to the
    objective of the whole run (carbon in grams, accuracy per request).
    """

    lam: float
    base_power_w: float
    base_accuracy: float
    carbon_intensity: float
    pue: float = REFERENCE_PUE
    accuracy_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"λ must be in [0, 1], got {self.lam}")
        if self.base_power_w <= 0 or self.base_accuracy <= 0:
            raise ValueError("base power and base accuracy must be positive")

    @property
    def base_carbon_g_per_h(self) -> float:
        return self.base_power_w * REFERENCE_CI * REFERENCE_PUE / 1000.0

    def carbon_g_per_h(self, power_w: float) -> float:
        return power_w * self.carbon_intensity * self.pue / 1000.0

    def value(self, power_w: float, accuracy: float) -> float:
        return self.constant + self.power_coef * power_w + self.accuracy_coef * accuracy

    # Linear form used by the MILP: value = constant + power_coef·P + accuracy_coef·A.
    @property
    def power_coef(self) -> float:
        return -self.lam * self.carbon_intensity * self.pue / 1000.0 / self.base_carbon_g_per_h

    @property
    def accuracy_coef(self) -> float:
        return (1.0 - self.lam) * self.accuracy_weight / self.base_accuracy

    @property
    def constant(self) -> float:
        return self.lam - (1.0 - self.lam) * self.accuracy_weight


def clover_score(lam: float, carbon: float, accuracy: float, base_carbon: float, base_accuracy: float) -> float:
    """f = λ·ΔC − (1−λ)·ΔA for any consistent carbon unit (g/h, g per request, g per run)."""
    d_c = (base_carbon - carbon) / base_carbon
    d_a = (base_accuracy - accuracy) / base_accuracy
    return lam * d_c - (1.0 - lam) * d_a
