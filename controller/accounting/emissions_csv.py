"""emissions.csv in the run directory: CodeCarbon 3.x's columns first, in its order, so its
tools read it; Clover's own figures after them.

The first 38 columns are the fields of CodeCarbon's `EmissionsData` in release
CODECARBON_LAYOUT (tests/test_emissions_csv.py checks them against the installed package and
round-trips rows through CodeCarbon's own file output). Units as CodeCarbon: seconds, kg CO2eq,
kg/s, W, kWh, litres.

One row per accounting interval and service (not CodeCarbon's one row per run):
`project_name` is the service, `duration`, `emissions` and the energies are that interval's, so
summing a column over rows gives the run's total. `emissions` covers everything in
`energy_consumed` (GPUs, and the hosts' CPU/DRAM when measured) plus embodied carbon.
Location columns come from the carbon source (controller/carbon/location.py). Figures Clover
does not measure are 0, as CodeCarbon writes them by default: water (no water-use factor), CPU/
GPU/RAM utilisation, RAM in use; `cpu_energy`/`ram_energy` are 0 unless RAPL was read, and the
`estimated` column says when a figure is missing or modelled.
"""
from __future__ import annotations

import csv
import os
import platform
from collections.abc import Mapping
from pathlib import Path

from configs.units import kwh
from controller.accounting.attribution import IntervalAccount
from controller.carbon.location import GridLocation, source_location

CODECARBON_LAYOUT = "3.3.2"  # the CodeCarbon release whose emissions.csv columns these are
CODECARBON_COLUMNS = (
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "water_consumed", "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os",
    "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude",
    "latitude", "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue",
)
EXTRA_COLUMNS = (
    "carbon_intensity", "carbon_source", "baseline_emissions", "saved_emissions", "embodied_emissions",
    "accuracy", "baseline_accuracy", "p95_ms", "requests", "failed", "estimated", "notes",
)
COLUMNS = CODECARBON_COLUMNS + EXTRA_COLUMNS

HostValue = str | int | float


def host_info() -> dict[str, HostValue]:
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
    return {"os": platform.platform(), "python_version": platform.python_version(), "cpu_count": os.cpu_count() or 0,
            "cpu_model": cpu_model, "ram_total_size": round(ram_gb, 3)}


class EmissionsCsv:
    """Appends interval rows to one emissions.csv; refuses a file written with other columns."""

    def __init__(self, path: str | Path, *, run_id: str, gpu_count: int, gpu_model: str, carbon_source: str = "",
                 experiment_id: str = "", location: GridLocation | None = None, cloud_provider: str = "",
                 cloud_region: str = "", host: Mapping[str, HostValue] | None = None) -> None:
        """`location` defaults to the carbon source's (controller/carbon/location.py)."""
        self.path = Path(path)
        where = location if location is not None else source_location(carbon_source)
        self._static: dict[str, HostValue] = {
            "run_id": run_id, "experiment_id": experiment_id, "country_name": where.country_name,
            "country_iso_code": where.country_iso_code, "region": where.region, "cloud_provider": cloud_provider,
            "cloud_region": cloud_region, "codecarbon_version": CODECARBON_LAYOUT, "gpu_count": gpu_count,
            "gpu_model": gpu_model, "longitude": "", "latitude": "", "tracking_mode": "machine",
            "water_consumed": 0.0, "cpu_utilization_percent": 0.0, "gpu_utilization_percent": 0.0,
            "ram_utilization_percent": 0.0, "ram_used_gb": 0.0, "wue": 0.0,
            "on_cloud": "Y" if cloud_provider else "N", "carbon_source": carbon_source,
            **(host if host is not None else host_info()),
        }
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != COLUMNS:
                raise ValueError(f"{self.path}: existing file has different columns (another CodeCarbon layout or "
                                 "another tool's file); move it away or write this run to a new run directory")

    def append(self, a: IntervalAccount, *, service: str) -> dict[str, HostValue]:
        """Write one interval's row for `service` (CodeCarbon's `project_name`; header first when new)."""
        d = a.duration_s
        gpu_j, cpu_j, ram_j = a.energy_j, a.cpu_energy_j, a.ram_energy_j
        row = {
            **self._static,
            "timestamp": a.timestamp.strftime("%Y-%m-%dT%H:%M:%S"),
            "project_name": service,
            "duration": d,
            "emissions": a.carbon_g / 1000.0,
            "emissions_rate": a.carbon_g / 1000.0 / d,
            "cpu_power": cpu_j / d, "gpu_power": gpu_j / d, "ram_power": ram_j / d,
            "cpu_energy": kwh(cpu_j), "gpu_energy": kwh(gpu_j), "ram_energy": kwh(ram_j),
            "energy_consumed": kwh(gpu_j + cpu_j + ram_j),
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
