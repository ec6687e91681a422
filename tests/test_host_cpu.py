"""The host CPU as a serving device (issue 13 item 7): its catalog entry, its one uncut slice, the
node agent built for it, and the meter it uses — RAPL where readable, else energy modelled from
its CPU profile and flagged estimated."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from configs.loader import load_gpu_catalog
from configs.schema import HOST_CPU, GpuCatalog
from gpu_node.agent import NodeAgent
from gpu_node.cpu_profile import with_power
from gpu_node.devices import AgentConfig, build_devices
from gpu_node.host_cpu import (
    CpuBusy,
    CpuPackageMeter,
    HostCpuBackend,
    ModelledEnergy,
    ModelledMeter,
    cpu_meters,
    rapl_unreadable,
)
from gpu_node.profiler import summarize_run
from gpu_node.real_device import bundled_profiles, given_profiles, gpu_device
from mig.errors import InstanceInUseError, PlacementError
from mig.placement import enumerate_layouts, parse_layout
from models.performance import PerformanceModel
from tests.fake_nvml import FakeClock
from tests.mps_fixtures import control, mps_env  # noqa: F401 - fixture
from tests.test_meters_rapl_sim import _tree

ROOT = Path(__file__).resolve().parents[1]

WHOLE = "7g.whole"


def cpu_profile_doc(cores: int = 4, threads: int = 2) -> dict:
    """A CPU profile in `gpu-node profile --device cpu` shape, without a meter (as in a container):
    b0 at batches 1 and 4, the base b7 at batch 1, latencies of a small laptop CPU."""
    runs = {"effnet:b0": [summarize_run(1, "fp32", [0.030] * 5, 0.15, None, None, None),
                          summarize_run(4, "fp32", [0.090] * 5, 0.45, None, None, None)],
            "effnet:b7": [summarize_run(1, "fp32", [1.6] * 2, 3.2, None, None, None)]}
    info = {"gpu": "Some CPU", "device": "cpu", "cpu_threads": threads, "cpus_available": cores,
            "idle_power_w": None, "energy_meter": None}
    return {"info": info, "variants": {k: {"params": 1, "runs": r} for k, r in runs.items()}}


@pytest.fixture
def cpu_profile_file(tmp_path):
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(with_power(cpu_profile_doc(), load_gpu_catalog().get(HOST_CPU), "no RAPL zones")))
    return path


def test_catalog_has_the_host_cpu_as_one_uncut_device():
    catalog = load_gpu_catalog()
    cpu = catalog.get(HOST_CPU)
    assert cpu.partitioning == "none" and [p.name for p in catalog.main_profiles(HOST_CPU)] == [WHOLE]
    assert cpu.profile(WHOLE).compute_slices == cpu.compute_slices == 7  # the accounting's whole device
    assert [list(layout) for layout in enumerate_layouts(HOST_CPU)] == [list(parse_layout(f"{WHOLE}@0"))]
    host = cpu.scaled_to(2)
    assert (host.total_sms, host.idle_power_w, host.max_power_w) == (2, cpu.idle_power_w / 4, cpu.max_power_w / 4)
    measured = cpu.scaled_to(2, idle_power_w=3.0, max_power_w=20.0)
    assert (measured.idle_power_w, measured.max_power_w, measured.profile(WHOLE).sms) == (3.0, 20.0, 2)
    with pytest.raises(ValueError, match="cores must be >= 1"):
        cpu.scaled_to(0)


def test_a_partitioned_type_still_needs_every_main_profile():
    doc = {"gpu_types": {"X": {"partitioning": "mps", "memory_gib": 8, "total_sms": 10, "idle_power_w": 1,
                               "max_power_w": 2, "profiles": [{"id": 0, "name": "7g.8gb", "compute_slices": 7,
                                                               "sms": 10, "memory_gib": 8, "max_instances": 1,
                                                               "starts": [0], "size": 8}]}},
           "main_profile_ids": [19, 0]}
    with pytest.raises(ValueError, match=r"main profile ids \[19\] are not defined"):
        GpuCatalog.model_validate(doc)
    doc["gpu_types"]["X"]["partitioning"] = "none"
    assert [p.id for p in GpuCatalog.model_validate(doc).main_profiles("X")] == [0]


def test_the_cpu_profile_predicts_on_the_hosts_cpu(cpu_profile_file):
    perf = PerformanceModel.from_profiles([cpu_profile_file])
    assert perf.reference_gpu_type == HOST_CPU and perf.variants() == ["effnet:b0", "effnet:b7"]
    assert perf.batch_latency_ms("effnet:b0", HOST_CPU, 7, 1) == pytest.approx(30.0, rel=0.1)
    assert perf.batch_latency_ms("effnet:b0", HOST_CPU, 7, 4) == pytest.approx(90.0, rel=0.1)
    host = load_gpu_catalog().get(HOST_CPU).scaled_to(4)  # the file's 4 cores, not the catalog's 8
    assert perf.idle_power_w(HOST_CPU) == host.idle_power_w and perf.max_power_w(HOST_CPU) == host.max_power_w
    # 2 of 4 cores busy: half the range above idle while a batch runs
    assert perf.busy_power_w("effnet:b0", HOST_CPU, 7, 4) == pytest.approx(
        (host.max_power_w - host.idle_power_w) / 2, rel=0.05)


def test_given_profiles_must_be_of_the_device_that_runs(cpu_profile_file):
    assert given_profiles([str(cpu_profile_file)], HOST_CPU)[0] == (str(cpu_profile_file),)
    with pytest.raises(ValueError, match="measured on CPU, but the replicas run on H100-80GB"):
        given_profiles([str(cpu_profile_file)], "H100-80GB")
    h100 = bundled_profiles("H100-80GB-MPS")  # MIG off: the same board's bundled profiles
    assert h100 and all("h100-sxm_" in f for f in h100)
    assert given_profiles(h100, "H100-80GB-MPS")[0] == h100
    with pytest.raises(ValueError, match="no bundled performance profile for L4-24GB.*--profile FILE"):
        bundled_profiles("L4-24GB")


def test_the_cpu_slice_is_booked_and_protected_like_a_share(tmp_path):
    users: dict[tuple[int, int], list[str]] = {}
    backend = HostCpuBackend(tmp_path / "cpu-state.json", users=lambda g, gi: users.get((g, gi), []))
    (gpu,) = backend.list_gpus()
    assert (gpu.index, gpu.gpu_type, gpu.partitioning, gpu.enabled) == (0, HOST_CPU, "none", True)
    inst = backend.create_instance(0, WHOLE, 0)
    assert backend.slice_env(gpu, inst) == {"CUDA_VISIBLE_DEVICES": ""}  # no GPU, even where there is one
    with pytest.raises(PlacementError):
        backend.create_instance(0, WHOLE, 0)
    assert [i.profile for i in HostCpuBackend(tmp_path / "cpu-state.json").list_instances(0)] == [WHOLE]
    users[(0, inst.gi_id)] = ["replica-a"]
    with pytest.raises(InstanceInUseError, match="replica-a"):
        backend.destroy_instance(0, inst.gi_id)
    users.clear()
    backend.destroy_instance(0, inst.gi_id)
    assert backend.list_instances(0) == []


def test_a_cpu_node_must_be_real():
    with pytest.raises(ValueError, match="simulate=False"):
        AgentConfig("n", device="cpu")
    with pytest.raises(ValueError, match="'gpu' or 'cpu'"):
        AgentConfig("n", simulate=False, device="tpu")


def test_rapl_is_the_cpu_meter_where_readable(tmp_path, cpu_profile_file):
    zones = _tree(tmp_path)
    clock = FakeClock()
    meter, busy = cpu_meters(lambda: pytest.fail("a readable RAPL needs no model"), root=tmp_path)
    assert isinstance(meter, CpuPackageMeter) and isinstance(busy, CpuBusy) and meter.devices() == ["gpu0"]
    meter._clock = clock
    meter.begin_window("w")
    (zones["cpu0"] / "energy_uj").write_text("31000000\n")  # +30 J package 0
    (zones["cpu0-dram"] / "energy_uj").write_text("7000000\n")  # +5 J its DRAM
    clock.advance(1.0)
    m = meter.end_window("w")
    assert m.energy_j == pytest.approx({"gpu0": 35.0}) and not m.estimated and m.source == "rapl"


def test_unreadable_rapl_gives_modelled_energy_flagged_estimated(tmp_path, cpu_profile_file):
    perf = PerformanceModel.from_profiles([cpu_profile_file])
    meter, busy = cpu_meters(lambda: perf, root=tmp_path / "no-powercap")
    assert isinstance(meter, ModelledMeter) and isinstance(busy, CpuBusy)
    clock = FakeClock()
    energy = ModelledEnergy(perf, clock=clock)
    meter = ModelledMeter(energy, "RAPL not readable (test)", clock=clock)
    busy = CpuBusy(energy)
    meter.begin_window("w")
    busy.record_batch(0, 7, "effnet:b0", 4, f"{WHOLE}@0")
    clock.advance(10.0)
    busy.record_busy(0, f"{WHOLE}@0", 2.0)  # the replica measured 2 s of forward passes
    m = meter.end_window("w")
    expected = 10.0 * perf.idle_power_w(HOST_CPU) + 2.0 * perf.busy_power_w("effnet:b0", HOST_CPU, 7, 4)
    assert m.energy_j["gpu0"] == pytest.approx(expected, abs=0.01)
    assert m.estimated and m.source == "modelled" and "RAPL not readable" in m.notes[-1]
    assert busy.take() == {0: {f"{WHOLE}@0": 2.0}}  # measured busy time, for per-slice attribution


def test_the_agent_of_a_cpu_node_serves_one_whole_cpu(tmp_path, cpu_profile_file):
    cfg = AgentConfig("n0", simulate=False, gpus=1, gpu_type=HOST_CPU, state_dir=str(tmp_path / "n0"), device="cpu",
                      profile=str(cpu_profile_file))
    agent = NodeAgent(cfg)
    (gpu,) = agent.info().gpus
    assert (gpu.gpu_id, gpu.gpu_type, gpu.partitioning, gpu.slices) == ("n0/gpu0", HOST_CPU, "none", ())
    ops = agent.apply_layout(0, list(parse_layout(f"{WHOLE}@0")))
    assert [(o.op, o.profile, o.ok) for o in ops] == [("create", WHOLE, True)]
    assert agent.info().gpus[0].slices[0].env == {"CUDA_VISIBLE_DEVICES": ""}
    agent.record_batch(0, 7, "effnet:b0", 1, f"{WHOLE}@0")
    agent.record_busy(0, f"{WHOLE}@0", 0.5)
    e = agent.interval_energy()
    assert e.busy_s == {"n0/gpu0": {f"{WHOLE}@0": 0.5}} and e.energy_j["n0/gpu0"] > 0
    assert e.host is None  # the CPU's RAPL energy is the device's: not read again as host energy
    unreadable = rapl_unreadable()
    assert e.estimated == (unreadable is not None)
    assert e.source == ("rapl" if unreadable is None else "modelled")
    if unreadable is not None:
        assert e.energy_j["n0/gpu0"] >= 0.5 * PerformanceModel.from_profiles([cpu_profile_file]).busy_power_w(
            "effnet:b0", HOST_CPU, 7, 1)


def test_a_cpu_node_without_rapl_needs_its_profile(tmp_path):
    if rapl_unreadable() is None:
        pytest.skip("RAPL is readable here: no profile needed")
    cfg = AgentConfig("n0", simulate=False, gpu_type=HOST_CPU, state_dir=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="no CPU profile was given"):
        build_devices(cfg)


@pytest.fixture
def fake_gpu_node(tmp_path, monkeypatch, mps_env):  # noqa: F811 - the fake MPS tool on PATH too
    """This machine seen through the fake nvidia-smi: two H100s (NVML itself is absent here)."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(ROOT / "tests" / "fake_nvidia_smi"), os.environ["PATH"]]))
    monkeypatch.setenv("CLOVER_FAKE_SMI_STATE", str(tmp_path / "smi.json"))
    monkeypatch.setenv("CLOVER_FAKE_SMI_GPUS", "H100-80GB:2")
    return monkeypatch


def test_on_a_gpu_real_execution_uses_its_mig_slices_bundled_profile_and_nvml(tmp_path, fake_gpu_node):
    device = gpu_device("node0", str(tmp_path / "state"))
    assert (device.gpu_type, device.count, device.meter) == ("H100-80GB", 2, "NVML")
    assert device.device == "2× NVIDIA H100 80GB HBM3 (MIG)" and device.profile.startswith("bundled h100-sxm_*.json")
    assert device.profiles == bundled_profiles("H100-80GB")
    assert device.gpus == (("node0/gpu0", "H100-80GB"), ("node0/gpu1", "H100-80GB"))
    assert (device.agent.kind, device.agent.partition, device.agent.gpus) == ("nvidia-smi", "mig", 2)


def test_on_a_gpu_with_mig_off_real_execution_shares_it_through_mps(tmp_path, fake_gpu_node, cpu_profile_file):
    fake_gpu_node.setenv("CLOVER_FAKE_SMI_MIG", "0")
    with pytest.raises(ValueError, match="MIG mode off.*nvidia-cuda-mps-control -d"):
        gpu_device("node0", str(tmp_path / "state"))
    assert control("-d").returncode == 0
    device = gpu_device("node0", str(tmp_path / "state"))
    assert (device.gpu_type, device.agent.partition, device.device) == (
        "H100-80GB-MPS", "mps", "2× NVIDIA H100 80GB HBM3 (MPS)")
    with pytest.raises(ValueError, match="measured on CPU, but the replicas run on H100-80GB-MPS"):
        gpu_device("node0", str(tmp_path / "state"), [str(cpu_profile_file)])
