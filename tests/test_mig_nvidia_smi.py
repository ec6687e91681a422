"""NvidiaSmiBackend against the fake nvidia-smi: in-process for the logic, on PATH end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs.loader import load_gpu_catalog
from mig.errors import (
    InstanceInUseError,
    MigDisabledError,
    NvidiaSmiError,
    PlacementError,
    UnknownProfileError,
)
from mig.leases import LeaseBook
from mig.nvidia_smi import NvidiaSmiBackend, gpu_type_for_product
from mig.placement import parse_layout
from mig.repartition import apply_plan, plan_repartition
from mig.simulated import SimulatedMigBackend
from tests import fake_smi

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "nvidia-smi"


class FakeRunner:
    """subprocess.run stand-in that feeds argument lists to the fake nvidia-smi in-process."""

    def __init__(self, sim: SimulatedMigBackend):
        self.sim = sim
        self.calls: list[list[str]] = []

    def __call__(self, cmd, **kwargs):
        assert isinstance(cmd, list) and not kwargs.get("shell")
        self.calls.append(cmd[1:])
        rc, out = fake_smi.run(self.sim, cmd[1:])
        return subprocess.CompletedProcess(cmd, rc, out, "")


def _backend(sim, **kw):
    runner = FakeRunner(sim)
    return NvidiaSmiBackend(runner=runner, retry_delay_s=0, **kw), runner


def test_reads_gpus_profiles_and_instances():
    sim = SimulatedMigBackend([("H100-80GB", 1), ("A100-40GB", 1)])
    b, _ = _backend(sim)
    assert b.list_gpus() == sim.list_gpus()
    assert tuple(b.profiles(1)) == load_gpu_catalog().get("A100-40GB").profiles
    sim.create_instance(0, "3g.40gb", 4)
    sim.create_instance(0, "1g.10gb", 0)
    sim.create_instance(0, "2g.20gb", 2)
    assert b.list_instances(0) == sim.list_instances(0)  # GI ids, placements and MIG UUIDs
    assert gpu_type_for_product("NVIDIA H100 80GB HBM3") == "H100-80GB"
    assert gpu_type_for_product("Tesla T4") == ""


def test_create_destroy_and_errors():
    leases = LeaseBook()  # a live lease stands for a process on the instance
    sim = SimulatedMigBackend(["H100-80GB"], mig_enabled=False, users=leases.live_owners)
    b, runner = _backend(sim)
    assert b.list_instances(0) == []
    with pytest.raises(MigDisabledError, match="No MIG-enabled devices found"):
        b.create_instance(0, "3g.40gb", 0)
    assert b.set_mig_mode(0, True).startswith("Enabled MIG Mode for GPU 00000000:18:00.0")
    made = b.create_instance(0, "3g.40gb", 4)
    assert runner.calls[-4] == ["mig", "-i", "0", "-cgi", "9:4", "-C"]
    assert made == sim.list_instances(0)[0]
    with pytest.raises(PlacementError, match="Unable to create a GPU instance on GPU  0 using profile 14:4: "
                                             "Insufficient Resources"):
        b.create_instance(0, "2g.20gb", 4)
    with pytest.raises(UnknownProfileError, match="Invalid Argument .*the GPU offers: 1g.10gb"):
        b.create_instance(0, "5g.40gb", 0)
    leases.acquire(0, made.gi_id, "replica")
    with pytest.raises(InstanceInUseError, match="In use by another client"):
        b.destroy_instance(0, made.gi_id)
    assert sum(1 for c in runner.calls if "-dci" in c) == 1 + b.dci_retries
    leases.release(0, made.gi_id, "replica")
    b.destroy_instance(0, made.gi_id)
    assert sim.list_instances(0) == []


def test_dci_is_retried_until_the_process_is_gone():
    leases = LeaseBook()
    sim = SimulatedMigBackend(["H100-80GB"], users=leases.live_owners)
    made = sim.create_instance(0, "7g.80gb", 0)
    leases.acquire(0, made.gi_id, "exiting-replica")
    runner = FakeRunner(sim)

    def releasing_runner(cmd, **kw):
        result = runner(cmd, **kw)
        if "-dci" in cmd and sum("-dci" in c for c in runner.calls) == 2:
            leases.release(0, made.gi_id, "exiting-replica")  # the process exits between the 2nd and 3rd attempt
        return result

    b = NvidiaSmiBackend(runner=releasing_runner, retry_delay_s=0)
    b.destroy_instance(0, made.gi_id)
    assert [c[-1] for c in runner.calls] == ["-dci", "-dci", "-dci", "-dgi"]
    assert sim.list_instances(0) == []


def test_plan_applied_through_nvidia_smi_keeps_common_instances():
    sim = SimulatedMigBackend(["A100-80GB"])
    b, _ = _backend(sim)
    for p in parse_layout("4g@0,3g@4", "A100-80GB"):
        b.create_instance(0, p.profile, p.start)
    kept = next(i for i in b.list_instances(0) if i.start == 0)
    apply_plan(b, 0, plan_repartition(b.list_instances(0), parse_layout("4g@0,2g@4,1g@6", "A100-80GB")))
    after = b.list_instances(0)
    assert kept in after and sorted((i.profile, i.start) for i in after) == [
        ("1g.10gb", 6), ("2g.20gb", 4), ("4g.40gb", 0)]


def test_missing_binary_is_a_clear_error():
    b = NvidiaSmiBackend(binary="nvidia-smi-not-installed")
    with pytest.raises(NvidiaSmiError, match="not found on PATH.*--backend simulated"):
        b.list_gpus()


def test_fake_reproduces_the_real_h100_tables_and_the_synthetic_fixture(tmp_path):
    real = (FIXTURES / "h100-sxm_mig-disabled.txt").read_text()
    sim = SimulatedMigBackend(["H100-80GB"], mig_enabled=False)
    for cmd in (["mig", "-lgip"], ["mig", "-lgipp"], ["mig", "-lgi"], ["-L"]):
        rc, out = fake_smi.run(sim, cmd)
        block = real.split(f"### nvidia-smi {' '.join(cmd)}\n", 1)[1].split("\nrc=", 1)[0]
        assert (rc, out.replace(sim.list_gpus()[0].uuid, "GPU-141b1e27-9509-36f7-00c3-10e68a6753fa")) == (0, block + "\n")
    synth = (FIXTURES / "synthetic_h100_mig-enabled.txt").read_text()
    sim = SimulatedMigBackend(["H100-80GB"], mig_enabled=False)
    for block in synth.split("### nvidia-smi ")[1:]:
        cmd, _, rest = block.partition("\n")
        expected, _, rc = rest.rpartition("rc=")
        assert fake_smi.run(sim, cmd.split()) == (int(rc), expected), cmd


def test_end_to_end_through_the_executable_on_path(tmp_path, monkeypatch):
    """The real subprocess path: argument lists, PATH lookup, exit codes, state file between calls."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(ROOT / "tests" / "fake_nvidia_smi"),
                                                str(Path(sys.executable).parent), os.environ["PATH"]]))
    monkeypatch.setenv("CLOVER_FAKE_SMI_STATE", str(tmp_path / "smi.json"))
    monkeypatch.setenv("CLOVER_FAKE_SMI_GPUS", "H100-80GB:2")
    monkeypatch.setenv("CLOVER_FAKE_SMI_MIG", "0")
    b = NvidiaSmiBackend(retry_delay_s=0, dci_retries=1)
    assert [g.mig_enabled for g in b.list_gpus()] == [False, False]
    with pytest.raises(MigDisabledError):
        b.create_instance(1, "3g.40gb", 0)
    b.set_mig_mode(1, True)
    a = b.create_instance(1, "3g.40gb", 0)
    c = b.create_instance(1, "2g.20gb", 4)
    with pytest.raises(PlacementError, match="overlaps|Insufficient Resources"):
        b.create_instance(1, "3g.40gb", 4)
    assert b.list_instances(1) == [a, c]
    LeaseBook(fake_smi.leases_file(tmp_path / "smi.json")).acquire(1, c.gi_id, "agent")
    with pytest.raises(InstanceInUseError, match=f"GPU instance ID\\s+{c.gi_id}: In use by another client"):
        b.destroy_instance(1, c.gi_id)
    b.destroy_instance(1, a.gi_id)
    assert b.list_instances(1) == [c]
