"""RAPL meter over a fake powercap tree (tmp_path) and the simulated-GPU meter."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gpu_node.meters.rapl import RaplMeter
from gpu_node.meters.simulated import SimulatedGpuMeter
from tests.fake_nvml import FakeClock

REPO = Path(__file__).resolve().parents[1]
RANGE_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def _zone(path: Path, name: str, energy_uj: int) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
    return path


def _tree(root: Path) -> dict[str, Path]:
    pkg = _zone(root / "intel-rapl:0", "package-0", 1_000_000)
    return {
        "cpu0": pkg,
        "core": _zone(pkg / "intel-rapl:0:0", "core", 500),
        "cpu0-dram": _zone(pkg / "intel-rapl:0:1", "dram", 2_000_000),
        "cpu1": _zone(root / "intel-rapl:1", "package-1", RANGE_UJ - 1_000_000),
    }


def test_rapl_reads_packages_and_dram_and_unwraps(tmp_path):
    z = _tree(tmp_path)
    clock = FakeClock()
    meter = RaplMeter(tmp_path, clock=clock)
    assert meter.devices() == ["cpu0", "cpu0-dram", "cpu1"]  # core is inside the package
    meter.begin_window("w")
    (z["cpu0"] / "energy_uj").write_text("31000000\n")
    (z["cpu0-dram"] / "energy_uj").write_text("7000000\n")
    (z["cpu1"] / "energy_uj").write_text("4000000\n")  # wrapped past the range
    clock.advance(1.0)
    m = meter.end_window("w")
    assert not m.estimated
    assert m.energy_j == pytest.approx({"cpu0": 30.0, "cpu0-dram": 5.0, "cpu1": 5.0})


def test_no_rapl_is_reported_once(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        meter = RaplMeter(tmp_path / "nothing")
        meter.begin_window("w")
        m = meter.end_window("w")
    assert m.estimated and m.energy_j == {} and "no RAPL zones" in m.notes[0]
    assert caplog.text.count("energy meter unavailable") == 1


_CHILD = """
import json, logging, sys
sys.path.insert(0, sys.argv[2])
from gpu_node.meters.rapl import RaplMeter
m = RaplMeter(sys.argv[1]); m.begin_window('w'); r = m.end_window('w')
print(json.dumps({"reason": m.unavailable_reason, "estimated": r.estimated, "energy": r.energy_j}))
"""


def test_permission_denied_is_reported_and_marks_estimated():
    """energy_uj is root-only on Linux >= 5.10; read it as an unprivileged user."""
    root = Path(tempfile.mkdtemp(prefix="rapl-"))
    try:
        root.chmod(0o755)
        z = _tree(root)
        for p in z.values():
            (p / "energy_uj").chmod(0o400)
        if os.geteuid() == 0:  # root reads anything: drop to `nobody` with an interpreter it can run
            python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
            if python is None:
                pytest.skip("running as root and no system python3 for an unprivileged child")
            if any(d.stat().st_mode & 0o005 != 0o005 for d in (REPO, *REPO.parents)):
                pytest.skip(f"the unprivileged child cannot read the checkout {REPO} (a 0700 directory on its path)")
            kw: dict = {"user": 65534}
        else:
            python, kw = sys.executable, {}
        out = subprocess.run([python, "-c", _CHILD, str(root), str(REPO)], capture_output=True, text=True,
                             check=True, **kw)
        res = json.loads(out.stdout)
        assert "permission denied" in res["reason"] and "energy_uj" in res["reason"]
        assert res["estimated"] and res["energy"] == {}
        assert "energy meter unavailable" in out.stderr
    finally:
        shutil.rmtree(root)


class _Counter:
    def __init__(self, mj: int) -> None:
        self.mj = mj

    def total_energy_mj(self) -> int:
        return self.mj


def test_simulated_meter_reads_the_simulated_counters():
    gpus = {"gpu0": _Counter(5_000), "gpu1": _Counter(0)}
    clock = FakeClock()
    meter = SimulatedGpuMeter(gpus, clock=clock)
    meter.begin_window("w")
    gpus["gpu0"].mj += 75_000
    gpus["gpu1"].mj += 1_500
    clock.advance(1.0)
    m = meter.end_window("w")
    assert m.energy_j == {"gpu0": 75.0, "gpu1": 1.5} and not m.estimated and m.source == "simulated"


def test_simulated_meter_over_the_real_simulated_gpu():
    sim = pytest.importorskip("gpu_node.simulated_gpu")
    perf = pytest.importorskip("models.performance")
    clock = FakeClock()
    gpu = sim.SimulatedGpu("H100-80GB", perf.PerformanceModel.default(), clock=clock)
    meter = SimulatedGpuMeter({"gpu0": gpu}, clock=clock)
    meter.begin_window("w")
    clock.advance(10.0)
    m = meter.end_window("w")
    idle = perf.PerformanceModel.default().idle_power_w("H100-80GB")
    assert m.energy_j["gpu0"] == pytest.approx(idle * 10.0, rel=1e-3)
