"""emissions.csv read by CodeCarbon's own code: its `EmissionsData` fields are our first columns,
in order, and its file output writes our rows back unchanged; units, location, host energy.

`codecarbon` is a test dependency (pyproject `dev`); nothing here copies its column list.
"""
from __future__ import annotations

import csv
import dataclasses
import typing

import pytest
from codecarbon.output_methods.emissions_data import EmissionsData
from codecarbon.output_methods.file import FileOutput

from configs import load_services, trace_names
from controller.accounting.attribution import Accountant, HostEnergy, SliceActivity
from controller.accounting.emissions_csv import (
    CODECARBON_COLUMNS,
    CODECARBON_LAYOUT,
    COLUMNS,
    EXTRA_COLUMNS,
    EmissionsCsv,
    read_rows,
)
from controller.carbon.location import source_location
from models.performance import PerformanceModel

CC_FIELDS = [f.name for f in dataclasses.fields(EmissionsData)]
CC_TYPES = typing.get_type_hints(EmissionsData)


def _accounts(n: int, host: HostEnergy | None = None):
    acct = Accountant(load_services().get("yolo"), {"gpu0": "H100-80GB"}, PerformanceModel.default())
    return [acct.record_interval(30.0, {"gpu0": 3600.0 * (i + 1)}, [SliceActivity("gpu0", "7g@0", 7, "yolo11s", 10.0)],
                                 {"yolo11s": 300}, 200.0 + i, 1.5, p95_ms=21.5, host=host) for i in range(n)]


def _writer(path, source: str = "trace:emaps_de_2023") -> EmissionsCsv:
    return EmissionsCsv(path, run_id="r1", gpu_count=1, gpu_model="NVIDIA H100 80GB HBM3", carbon_source=source)


def _as_codecarbon(row: dict[str, str]) -> EmissionsData:
    """One of our rows as CodeCarbon's dataclass, each value converted to the field's declared type."""
    def typed(name: str):
        text = row[name]
        if CC_TYPES[name] is float:
            return None if text == "" else float(text)  # CodeCarbon leaves unknown coordinates empty too
        return text
    return EmissionsData(**{name: typed(name) for name in CC_FIELDS})


def test_first_columns_are_codecarbons_emissions_data_fields_in_order(tmp_path):
    assert list(CODECARBON_COLUMNS) == CC_FIELDS, "CodeCarbon's layout changed: update CODECARBON_COLUMNS/_LAYOUT"
    p = tmp_path / "emissions.csv"
    for a in _accounts(2):
        _writer(p).append(a, service="yolo")
    with p.open(newline="") as f:
        header = next(csv.reader(f))
    assert header == CC_FIELDS + list(EXTRA_COLUMNS) and tuple(header) == COLUMNS
    data = _as_codecarbon(read_rows(p)[0])
    # CodeCarbon's own header check accepts the CodeCarbon part of our header.
    assert FileOutput("emissions.csv", str(tmp_path)).has_valid_headers(data, header[:len(CC_FIELDS)])
    assert data.codecarbon_version == CODECARBON_LAYOUT


def test_codecarbons_file_output_writes_our_rows_back_unchanged(tmp_path):
    ours = tmp_path / "emissions.csv"
    for a in _accounts(3, host=HostEnergy(cpu_j=1800.0, ram_j=360.0)):
        _writer(ours).append(a, service="yolo")
    rows = read_rows(ours)
    out_dir = tmp_path / "cc"
    out_dir.mkdir()
    sink = FileOutput("emissions.csv", str(out_dir))
    for row in rows:
        sink.out(_as_codecarbon(row), None)  # appends after the first: runs CodeCarbon's header check
    assert [p.name for p in out_dir.iterdir()] == ["emissions.csv"]  # no backup: it accepted its own appends
    theirs = read_rows(out_dir / "emissions.csv")
    assert len(theirs) == 3
    for mine, cc in zip(rows, theirs):
        for name in CC_FIELDS:
            if CC_TYPES[name] is float and mine[name] != "":
                assert float(cc[name]) == pytest.approx(float(mine[name]), rel=1e-12), name
            else:
                assert cc[name] == mine[name], name
    assert theirs[0]["country_iso_code"].upper() == "DEU"  # what CodeCarbon's dashboard calls .upper() on


def test_units_are_kwh_and_kg_and_host_energy_fills_cpu_and_ram(tmp_path):
    p = tmp_path / "e.csv"
    a = _accounts(1, host=HostEnergy.from_rapl({"cpu0": 1800.0, "cpu0-dram": 360.0}))[0]
    _writer(p).append(a, service="yolo")
    row = read_rows(p)[0]
    assert float(row["gpu_energy"]) == pytest.approx(0.001)  # 3600 J
    assert float(row["cpu_energy"]) == pytest.approx(0.0005) and float(row["ram_energy"]) == pytest.approx(0.0001)
    assert float(row["energy_consumed"]) == pytest.approx(0.0016)
    assert float(row["cpu_power"]) == pytest.approx(60.0) and float(row["ram_power"]) == pytest.approx(12.0)
    assert float(row["emissions"]) == pytest.approx(0.0016 * 200 * 1.5 / 1000)  # kg, host included
    assert float(row["emissions_rate"]) == pytest.approx(float(row["emissions"]) / 30)
    assert float(row["gpu_power"]) == pytest.approx(120.0)  # W
    # The hosts would run under `base` too: the same host carbon is in the baseline, so the saving is the GPUs'.
    assert a.host_carbon_g == pytest.approx(0.0006 * 200 * 1.5)
    assert float(row["baseline_emissions"]) == pytest.approx(a.baseline_carbon_g / 1000)
    no_host = _accounts(1)[0]
    assert a.saved_g == pytest.approx(no_host.saved_g)
    assert row["pue"] == "1.5" and row["run_id"] == "r1" and row["on_cloud"] == "N"
    assert row["estimated"] == "False" and float(row["p95_ms"]) == 21.5 and row["requests"] == "300"


def test_unreadable_rapl_marks_the_row_estimated(tmp_path):
    p = tmp_path / "e.csv"
    _writer(p).append(_accounts(1, host=HostEnergy.from_rapl({}))[0], service="yolo")
    row = read_rows(p)[0]
    assert row["estimated"] == "True" and "RAPL" in row["notes"]
    assert float(row["cpu_energy"]) == 0.0 and float(row["ram_energy"]) == 0.0


def test_one_row_per_service_and_interval(tmp_path):
    p = tmp_path / "e.csv"
    out = _writer(p)
    for a in _accounts(2):
        for service in ("yolo", "albert"):
            out.append(a, service=service)
    assert [r["project_name"] for r in read_rows(p)] == ["yolo", "albert", "yolo", "albert"]


@pytest.mark.parametrize(("source", "iso", "name", "region"), [
    ("trace:emaps_de_2023", "DEU", "Germany", ""),
    ("trace:clover_ciso-march_49h", "USA", "United States", "california"),
    ("trace:emaps_us-tex-erco_2023", "USA", "United States", "texas"),
    ("trace:emaps_no_2023", "NOR", "Norway", ""),
    ("electricitymaps:NO-NO1", "NOR", "Norway", "NO1"),
    ("electricitymaps:US-MIDA-PJM", "USA", "United States", "MIDA-PJM"),
    ("uk", "GBR", "United Kingdom", ""),
    ("uk:13", "GBR", "United Kingdom", "london"),
    ("watttime:CAISO_NORTH", "USA", "United States", "california"),
    ("constant:250", "", "", ""),
])
def test_location_columns_come_from_the_carbon_source(tmp_path, source, iso, name, region):
    p = tmp_path / "e.csv"
    _writer(p, source).append(_accounts(1)[0], service="yolo")
    row = read_rows(p)[0]
    assert (row["country_iso_code"], row["country_name"], row["region"]) == (iso, name, region)
    assert row["carbon_source"] == source


def test_every_bundled_trace_says_its_country():
    for name in trace_names():
        loc = source_location(f"trace:{name}")
        assert len(loc.country_iso_code) == 3 and loc.country_name, name


def test_a_trace_file_outside_the_bundle_uses_the_zones_file_beside_it(tmp_path):
    trace = tmp_path / "mygrid.csv"
    trace.write_text("timestamp,carbon_intensity_gco2_per_kwh\n2024-01-01T00:00:00Z,300\n")
    assert source_location(f"trace:{trace}").country_iso_code == ""
    (tmp_path / "zones.yaml").write_text("mygrid: FR\n")
    assert source_location(f"trace:{trace}").country_iso_code == "FRA"


def test_appending_to_a_foreign_file_is_refused(tmp_path):
    p = tmp_path / "emissions.csv"
    p.write_text("timestamp,emissions\n2024-01-01,0.1\n")
    with pytest.raises(ValueError, match="different columns"):
        _writer(p)


def test_reopening_appends_after_existing_rows(tmp_path):
    p = tmp_path / "emissions.csv"
    for a in _accounts(2):
        _writer(p).append(a, service="yolo")
    assert len(read_rows(p)) == 2 and p.read_text().count("timestamp,project_name") == 1
