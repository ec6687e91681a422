"""The hosts' CPU package and DRAM energy, from a node agent's RAPL reading to emissions.csv.

A real agent (simulated GPUs) reads a fake powercap tree (tmp_path) whose counters the test
advances; its `IntervalEnergy` goes through `FleetEnergy.of` (what RayFleet does with every
agent's answer) into the loop's interval accounting, the real Accountant and the real CSV writer.
"""
from __future__ import annotations

import platform
from pathlib import Path

import pytest

from configs import load_services
from configs.units import kwh
from controller.accounting.attribution import Accountant
from controller.accounting.emissions_csv import EmissionsCsv, read_rows
from controller.accounting.metrics import AccountingTotals
from controller.loop.interval import IntervalAccounting, TrafficWindow
from controller.loop.ports import FleetEnergy
from gpu_node.agent import NodeAgent
from gpu_node.devices import RAPL_ROOT_ENV, AgentConfig
from gpu_node.records import HostReading, IntervalEnergy
from models.performance import PerformanceModel
from tests.fake_nvml import FakeClock
from tests.loop_fakes import Events, FakeBus, FakeFleet, Journal
from tests.test_meters_rapl_sim import RANGE_UJ, _tree

GPU = "n0/gpu0"


def _agent(tmp_path: Path, rapl_root: Path | None) -> NodeAgent:
    return NodeAgent(AgentConfig("n0", gpus=1, state_dir=str(tmp_path / "state"),
                                 rapl_root=None if rapl_root is None else str(rapl_root)))


def _advance(zone: Path, microjoules: int) -> None:
    """The zone's counter moves on by `microjoules`, wrapping at its range as RAPL's does."""
    now = int((zone / "energy_uj").read_text())
    (zone / "energy_uj").write_text(f"{(now + microjoules) % RANGE_UJ}\n")


@pytest.fixture
def powercap(tmp_path) -> dict[str, Path]:
    """Package 0 with its DRAM, and package 1 one MJ short of its counter's wrap."""
    return _tree(tmp_path / "powercap")


def test_agent_reads_its_hosts_package_and_dram_energy_per_interval(tmp_path, powercap):
    agent = _agent(tmp_path, tmp_path / "powercap")
    _advance(powercap["cpu0"], 30_000_000)
    _advance(powercap["cpu0-dram"], 5_000_000)
    _advance(powercap["cpu1"], 5_000_000)  # wraps past the range
    e = agent.interval_energy()
    assert e.host is not None and e.host.machine == platform.node() and not e.host.estimated
    assert e.host.energy_j == pytest.approx({"cpu0": 30.0, "cpu0-dram": 5.0, "cpu1": 5.0})
    assert set(e.energy_j) == {GPU} and not e.estimated  # the GPUs' reading is unchanged
    _advance(powercap["cpu0"], 2_000_000)
    second = agent.interval_energy()  # the next window starts where the last one ended
    assert second.host is not None and second.host.energy_j == pytest.approx({"cpu0": 2.0, "cpu0-dram": 0.0,
                                                                              "cpu1": 0.0})
    host = FleetEnergy.of({"n0": e}).host
    assert (host.cpu_j, host.ram_j, host.estimated) == (pytest.approx(35.0), pytest.approx(5.0), False)


def test_the_powercap_root_defaults_to_the_environment(tmp_path, powercap, monkeypatch):
    monkeypatch.setenv(RAPL_ROOT_ENV, str(tmp_path / "powercap"))
    agent = _agent(tmp_path, None)
    _advance(powercap["cpu0"], 1_000_000)
    e = agent.interval_energy()
    assert e.host is not None and e.host.energy_j["cpu0"] == pytest.approx(1.0)


def test_unreadable_rapl_is_not_measured_and_says_why(tmp_path):
    e = _agent(tmp_path, tmp_path / "no-powercap").interval_energy()
    assert e.host is not None and e.host.energy_j == {} and e.host.estimated
    assert any("no RAPL zones under" in n for n in e.host.notes)
    host = FleetEnergy.of({"n0": e}).host
    assert (host.cpu_j, host.ram_j, host.estimated) == (0.0, 0.0, True)
    assert any("not readable (RAPL)" in n for n in host.notes)
    assert any(n.startswith(f"host {platform.node()}: no RAPL zones") for n in host.notes)


def _reading(host: HostReading | None) -> IntervalEnergy:
    return IntervalEnergy({}, {}, 30.0, False, "simulated", host=host)


def test_fleet_counts_each_machine_once_and_flags_one_it_could_not_read():
    a = HostReading("m1", {"cpu0": 30.0, "cpu0-dram": 5.0}, False)
    fleet = FleetEnergy.of({"n0": _reading(a), "n1": _reading(a), "n2": _reading(None)})  # n0, n1 share m1
    assert (fleet.host.cpu_j, fleet.host.ram_j, fleet.host.estimated) == (30.0, 5.0, False)
    blind = HostReading("m2", {}, True, ("no RAPL zones under /sys/class/powercap",))
    fleet = FleetEnergy.of({"n0": _reading(a), "n3": _reading(blind), "n4": _reading(blind)})
    assert (fleet.host.cpu_j, fleet.host.ram_j, fleet.host.estimated) == (30.0, 5.0, True)
    assert fleet.host.notes == ("host m2: no RAPL zones under /sys/class/powercap",)  # once for the machine
    assert FleetEnergy.of({"cpu-node": _reading(None)}).host.estimated is False  # its CPU is its device


def _interval_to_csv(tmp_path: Path, agent: NodeAgent) -> tuple[dict[str, str], dict, AccountingTotals]:
    """One 10 s interval through the loop's accounting: the agent's reading → emissions.csv row, run.log event."""
    service = load_services().get("yolo")
    accountant = Accountant(service, {GPU: "H100-80GB"}, PerformanceModel.default())
    fleet, events, totals, clock = FakeFleet(tmp_path, Journal(), {"n0": 1}), Events(), AccountingTotals(), FakeClock()
    csv = EmissionsCsv(tmp_path / "emissions.csv", run_id="r1", gpu_count=1, gpu_model="H100-80GB")
    accounting = IntervalAccounting(accountant, TrafficWindow(FakeBus(Journal()), clock=clock), fleet, events, totals,
                                    on_interval=lambda a, name: csv.append(a, service=name))
    clock.advance(10.0)
    fleet.energy = FleetEnergy.of({"n0": agent.interval_energy()})
    accounting.account([], carbon_intensity=300.0, pue=1.2, slas_ms={service.name: 100.0})
    (row,) = read_rows(tmp_path / "emissions.csv")
    ((_, _, event),) = events.of("interval")
    return row, event, totals


def test_measured_host_energy_fills_the_csv_cpu_and_ram_columns(tmp_path, powercap):
    agent = _agent(tmp_path, tmp_path / "powercap")
    _advance(powercap["cpu0"], 30_000_000)
    _advance(powercap["cpu1"], 6_000_000)  # wraps
    _advance(powercap["cpu0-dram"], 9_000_000)
    row, event, totals = _interval_to_csv(tmp_path, agent)
    assert float(row["cpu_energy"]) == pytest.approx(kwh(36.0)) and float(row["ram_energy"]) == pytest.approx(kwh(9.0))
    assert float(row["cpu_power"]) == pytest.approx(3.6) and float(row["ram_power"]) == pytest.approx(0.9)
    gpu_kwh = float(row["gpu_energy"])
    assert float(row["energy_consumed"]) == pytest.approx(gpu_kwh + kwh(45.0))
    assert row["estimated"] == "False" and "RAPL" not in row["notes"]
    assert event["cpu_energy_j"] == pytest.approx(36.0) and event["ram_energy_j"] == pytest.approx(9.0)
    host = totals.snapshot().host_energy_j
    assert host[("yolo", "cpu")] == pytest.approx(36.0) and host[("yolo", "dram")] == pytest.approx(9.0)


def test_unreadable_host_energy_leaves_the_columns_at_zero_and_marks_the_row(tmp_path):
    agent = _agent(tmp_path, tmp_path / "no-powercap")
    row, event, _ = _interval_to_csv(tmp_path, agent)
    assert float(row["cpu_energy"]) == 0.0 and float(row["ram_energy"]) == 0.0 and float(row["gpu_energy"]) > 0
    assert row["estimated"] == "True" and "host CPU/DRAM energy not readable (RAPL)" in row["notes"]
    assert event["estimated"] and any("no RAPL zones under" in n for n in event["notes"])
