"""Units and the one conversion from energy to carbon, shared by planning, accounting and the
outputs: joules inside the code, kWh only where a file format asks for it (emissions.csv),
carbon intensity in gCO2/kWh, carbon in grams.
"""
from __future__ import annotations

J_PER_KWH = 3.6e6


def kwh(energy_j: float) -> float:
    return energy_j / J_PER_KWH


def carbon_g(energy_j: float, carbon_intensity: float, pue: float) -> float:
    """Carbon (g) of `energy_j` joules at `carbon_intensity` gCO2/kWh and `pue`."""
    return kwh(energy_j) * carbon_intensity * pue
