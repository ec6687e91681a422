"""emissions.csv: CodeCarbon's 31 columns first, in order, kWh and kg; one row per interval."""
from __future__ import annotations

import csv

import pytest

from configs import load_services
from controller.accounting.attribution import Accountant, SliceActivity
from controller.accounting.emissions_csv import (
    CODECARBON_COLUMNS,
    COLUMNS,
    EmissionsCsv,
    read_rows,
)
from models.performance import PerformanceModel

# Copied by hand from ../shared/docs/REFERENCE.md §4 (CodeCarbon's emissions.csv header).
REFERENCE_HEADER = (
    "timestamp, project_name, run_id, duration, emissions, emissions_rate, cpu_power, gpu_power, ram_power, "
    "cpu_energy, gpu_energy, ram_energy, energy_consumed, country_name, country_iso_code, region, cloud_provider, "
    "cloud_region, os, python_version, codecarbon_version, cpu_count, cpu_model, gpu_count, gpu_model, longitude, "
    "latitude, ram_total_size, tracking_mode, on_cloud, pue"
)


def _accounts(n: int):
    acct = Accountant(load_services().get("yolo"), {"gpu0": "H100-80GB"}, PerformanceModel.default())
    return [acct.record_interval(30.0, {"gpu0": 3600.0 * (i + 1)}, [SliceActivity("gpu0", "7g@0", 7, "yolo11s", 10.0)],
                                 {"yolo11s": 300}, 200.0 + i, 1.5, p95_ms=21.5) for i in range(n)]


def test_first_31_columns_are_codecarbons_in_order(tmp_path):
    assert CODECARBON_COLUMNS == tuple(c.strip() for c in REFERENCE_HEADER.split(","))
    assert len(CODECARBON_COLUMNS) == 31
    out = EmissionsCsv(tmp_path / "emissions.csv", project_name="clover", run_id="r1", gpu_count=1,
                       gpu_model="NVIDIA H100 80GB HBM3", carbon_source="constant:200")
    for a in _accounts(3):
        out.append(a)
    with (tmp_path / "emissions.csv").open() as f:
        header = next(csv.reader(f))
    assert tuple(header[:31]) == CODECARBON_COLUMNS and tuple(header) == COLUMNS
    rows = read_rows(tmp_path / "emissions.csv")
    assert len(rows) == 3


def test_units_are_kwh_and_kg(tmp_path):
    out = EmissionsCsv(tmp_path / "e.csv", project_name="clover", run_id="r1", gpu_count=1, gpu_model="H100")
    a = _accounts(1)[0]
    out.append(a)
    row = read_rows(tmp_path / "e.csv")[0]
    assert float(row["gpu_energy"]) == pytest.approx(0.001)  # 3600 J
    assert float(row["energy_consumed"]) == pytest.approx(0.001)
    assert float(row["emissions"]) == pytest.approx(0.001 * 200 * 1.5 / 1000)  # kg
    assert float(row["emissions_rate"]) == pytest.approx(float(row["emissions"]) / 30)
    assert float(row["gpu_power"]) == pytest.approx(120.0)  # W
    assert float(row["baseline_emissions"]) == pytest.approx(a.baseline_carbon_g / 1000)
    assert row["pue"] == "1.5" and row["run_id"] == "r1" and row["on_cloud"] == "N"
    assert row["estimated"] == "False" and float(row["p95_ms"]) == 21.5 and row["requests"] == "300"


def test_appending_to_a_foreign_file_is_refused(tmp_path):
    p = tmp_path / "emissions.csv"
    p.write_text("timestamp,emissions\n2024-01-01,0.1\n")
    with pytest.raises(ValueError, match="different columns"):
        EmissionsCsv(p, project_name="x", run_id="y", gpu_count=1, gpu_model="g")


def test_reopening_appends_after_existing_rows(tmp_path):
    p = tmp_path / "emissions.csv"
    for a in _accounts(2):
        EmissionsCsv(p, project_name="x", run_id="y", gpu_count=1, gpu_model="g").append(a)
    assert len(read_rows(p)) == 2 and p.read_text().count("timestamp,project_name") == 1
