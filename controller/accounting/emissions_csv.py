"""emissions.csv in the run directory: CodeCarbon's 31 columns first, so its dashboards read it.

One row per accounting interval (not CodeCarbon's one row per run): `duration`, `emissions`
and the energies are that interval's, so summing a column gives the run's total. Units as
CodeCarbon: seconds, kg CO2eq, kg/s, W, kWh. Only the GPUs are metered unless CPU/RAM
energy is passed in; the CPU/RAM columns are then 0. Clover's own figures follow as extra
columns (baseline emissions, accuracy, p95, requests, estimated, ...).
"""
from __future__ import annotations

import csv
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from configs.units import kwh
from controller.accounting.attribution import IntervalAccount

CODECARBON_COLUMNS = (
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy",
    "energy_consumed", "country_name", "country_iso_code", "region", "cloud_provider",
    "cloud_region", "os", "python_version", "codecarbon_version", "cpu_count", "cpu_model",
    "gpu_count", "gpu_model", "longitude", "latitude", "ram_total_size", "tracking_mode",
    "on_cloud", "pue",
)
EXTRA_COLUMNS = (
    "carbon_intensity", "carbon_source", "baseline_emissions", "saved_emissions", "embodied_emissions",
    "accuracy", "baseline_accuracy", "p95_ms", "requests", "failed", "estimated", "notes",
)
COLUMNS = CODECARBON_COLUMNS + EXTRA_COLUMNS


def host_info() -> dict[str, Any]:
    """The machine columns CodeCarbon fills from the host (no GPU query: callers pass the GPUs)."""
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        ram_gb = 0.0
    return {"os": platform.platform(), "python_version": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model, "ram_total_size": round(ram_gb, 3)}


class EmissionsCsv:
    def __init__(self, path: str | Path, *, project_name: str, run_id: str, gpu_count: int, gpu_model: str,
                 carbon_source: str = "", country_name: str = "", country_iso_code: str = "", region: str = "",
                 cloud_provider: str = "", cloud_region: str = "", host: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._static = {
            "project_name": project_name, "run_id": run_id, "country_name": country_name,
            "country_iso_code": country_iso_code, "region": region, "cloud_provider": cloud_provider,
            "cloud_region": cloud_region, "codecarbon_version": "", "gpu_count": gpu_count,
            "gpu_model": gpu_model, "longitude": "", "latitude": "", "tracking_mode": "machine",
            "on_cloud": "Y" if cloud_provider else "N", "carbon_source": carbon_source,
            **(host if host is not None else host_info()),
        }
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != COLUMNS:
                raise ValueError(f"{self.path}: existing file has different columns; "
                                 "move it away or write this run to a new run directory")

    def append(self, a: IntervalAccount, *, cpu_energy_j: float = 0.0, ram_energy_j: float = 0.0) -> dict[str, Any]:
        """Write one interval's row (header first when the file is new) and return it."""
        d = a.duration_s
        energy_kwh = kwh(a.energy_j + cpu_energy_j + ram_energy_j)
        row = {
            **self._static,
            "timestamp": a.timestamp.strftime("%Y-%m-%dT%H:%M:%S"),
            "duration": d,
            "emissions": a.carbon_g / 1000.0,
            "emissions_rate": a.carbon_g / 1000.0 / d,
            "cpu_power": cpu_energy_j / d, "gpu_power": a.energy_j / d, "ram_power": ram_energy_j / d,
            "cpu_energy": kwh(cpu_energy_j), "gpu_energy": kwh(a.energy_j), "ram_energy": kwh(ram_energy_j),
            "energy_consumed": energy_kwh,
            "pue": a.pue,
            "carbon_intensity": a.carbon_intensity,
            "baseline_emissions": a.baseline_carbon_g / 1000.0,
            "saved_emissions": a.saved_g / 1000.0,
            "embodied_emissions": a.embodied_g / 1000.0,
            "accuracy": "" if a.accuracy is None else a.accuracy,
            "baseline_accuracy": a.baseline_accuracy,
            "p95_ms": "" if a.p95_ms is None else a.p95_ms,
            "requests": a.requests, "failed": a.failed,
            "estimated": a.estimated, "notes": "; ".join(a.notes),
        }
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        return row


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All rows of an emissions.csv (strings, as csv gives them)."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
