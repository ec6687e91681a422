"""The node's devices factory and the agent's logic in-process (no Ray): typed records, leases,
busy time on simulated and real GPUs, and a restart that rebuilds the whole view from the devices."""
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpu_node.agent import NodeAgent
from gpu_node.devices import AgentConfig, MeasuredBusy, ModelledBusy, NodeDevices, build_devices
from gpu_node.meters.simulated import SimulatedGpuMeter
from gpu_node.records import GpuRecord, IntervalEnergy, LeaseRecord, MigOpRecord, NodeInfo, SliceRecord
from gpu_node.simulated_gpu import SimulatedGpu
from mig.errors import MigError
from mig.leases import LEASE_TTL_S
from mig.mps import SimulatedDaemon
from mig.nvidia_smi import NvidiaSmiBackend
from mig.placement import parse_layout
from models.performance import PerformanceModel
from tests.fake_nvml import FakeClock

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, **kw) -> AgentConfig:
    return AgentConfig("n0", state_dir=str(tmp_path / "n0"), **{"gpus": 2, **kw})


def test_factory_builds_simulated_mig_and_mps_nodes(tmp_path):
    mig = build_devices(_cfg(tmp_path))
    assert mig.backend.partitioning == "mig" and isinstance(mig.busy, ModelledBusy)
    assert isinstance(mig.meter, SimulatedGpuMeter) and mig.meter.devices() == ["gpu0", "gpu1"]
    assert mig.leases.path == tmp_path / "n0" / "leases.json"
    mps = build_devices(_cfg(tmp_path, partition="mps", gpu_type="L4-24GB"))
    assert mps.backend.partitioning == "mps"
    assert [g.gpu_type for g in mps.backend.list_gpus()] == ["L4-24GB", "L4-24GB"]
    assert (tmp_path / "n0" / "mig-state.json").exists()


def test_factory_builds_a_real_node_from_nvidia_smi_and_nvml(tmp_path, monkeypatch):
    """The real path with the fake nvidia-smi on PATH; NVML is absent here, so energy is estimated."""
    pybin = tmp_path / "pybin"
    pybin.mkdir()
    (pybin / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (pybin / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(pybin), str(ROOT / "tests" / "fake_nvidia_smi"), os.environ["PATH"]]))
    monkeypatch.setenv("CLOVER_FAKE_SMI_STATE", str(tmp_path / "smi.json"))
    agent = NodeAgent(_cfg(tmp_path, simulate=False))
    assert isinstance(agent.devices.backend, NvidiaSmiBackend) and isinstance(agent.devices.busy, MeasuredBusy)
    ops = agent.apply_layout(0, list(parse_layout("3g@0,3g@4", "H100-80GB")))
    assert [(o.op, o.ok) for o in ops] == [("create", True), ("create", True)]
    info = agent.info()
    assert info.simulated is False and info.gpus[0].slices[0].uuid.startswith("MIG-")
    assert agent.record_batch(0, 3, "effnet:b0", 8, "3g.40gb@0") == 0.0  # the device runs it, not a model
    agent.record_busy(0, "3g.40gb@0", 0.25)
    agent.record_busy(0, "3g.40gb@0", 0.5)
    reading = agent.interval_energy()
    assert reading.busy_s == {"n0/gpu0": {"3g.40gb@0": 0.75}}  # measured busy time, for attribution
    assert reading.estimated and reading.energy_j == {}  # no NVML on this machine: said, not invented
    assert agent.interval_energy().busy_s == {}  # per interval


def test_measured_busy_rejects_nonsense():
    busy = MeasuredBusy()
    with pytest.raises(ValueError, match="must be >= 0"):
        busy.record_busy(0, "1g.10gb@0", -1.0)
    with pytest.raises(ValueError):
        busy.record_busy(0, "1g.10gb@0", float("nan"))


def test_modelled_busy_books_batches_and_ignores_replica_timings():
    clock = FakeClock()
    gpu = SimulatedGpu("H100-80GB", PerformanceModel.default(), clock=clock)
    busy = ModelledBusy({0: gpu})
    s = busy.record_batch(0, 7, "effnet:b0", 8, "7g.80gb@0")
    busy.record_busy(0, "7g.80gb@0", 99.0)  # the replica only slept: the model already booked it
    clock.advance(10.0)
    assert busy.take() == {0: {"7g.80gb@0": pytest.approx(s)}}
    assert busy.take() == {} and busy.record_batch(5, 7, "effnet:b0", 1, "x") == 0.0  # unknown GPU: nothing


def test_agent_returns_typed_records_and_mig_env(tmp_path):
    agent = NodeAgent(_cfg(tmp_path, gpus=1))
    ops = agent.apply_layout(0, list(parse_layout("4g@0,3g@4", "H100-80GB")))
    assert all(isinstance(o, MigOpRecord) and o.ok and o.node == "n0" for o in ops)
    info = agent.info()
    assert isinstance(info, NodeInfo) and info.started_at == agent.started_at and info.resource == "clover_node_n0"
    (gpu,) = info.gpus
    assert isinstance(gpu, GpuRecord) and (gpu.gpu_id, gpu.partitioning, gpu.enabled) == ("n0/gpu0", "mig", True)
    assert all(isinstance(s, SliceRecord) and s.env == {"CUDA_VISIBLE_DEVICES": s.uuid} for s in gpu.slices)
    assert [s.slice_id for s in gpu.slices] == ["4g.40gb@0", "3g.40gb@4"]
    s = agent.record_batch(0, 4, "effnet:b4", 8, "4g.40gb@0")
    assert s > 0
    reading = agent.interval_energy()
    assert isinstance(reading, IntervalEnergy) and set(reading.energy_j) == {"n0/gpu0"}
    assert not reading.estimated and reading.source == "simulated"


def test_mps_node_slices_carry_the_mps_environment(tmp_path):
    agent = NodeAgent(_cfg(tmp_path, gpus=1, partition="mps"))
    agent.apply_layout(0, list(parse_layout("3g@0,3g@4", "H100-80GB-MPS")))
    (gpu,) = agent.info().gpus
    assert (gpu.gpu_type, gpu.partitioning) == ("H100-80GB-MPS", "mps")
    assert [s.env for s in gpu.slices] == [{"CUDA_VISIBLE_DEVICES": gpu.uuid, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "43",
                                            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=40755M"}] * 2


def test_lease_api_and_a_failed_destroy_stops_the_layout(tmp_path):
    clock = FakeClock(5000.0)
    cfg = _cfg(tmp_path, gpus=1)
    devices = build_devices(cfg)
    devices = replace(devices, leases=type(devices.leases)(devices.leases.path, clock=clock))
    devices = replace(devices, backend=type(devices.backend)(state_file=cfg.state_path / "mig-state.json",
                                                             users=devices.leases.live_owners))
    agent = NodeAgent(cfg, devices)
    agent.apply_layout(0, list(parse_layout("4g@0,3g@4", "H100-80GB")))
    gi = {s.profile: s.gi_id for s in agent.info().gpus[0].slices}
    agent.acquire_lease(0, gi["4g.40gb"], "replica-a")
    agent.acquire_lease(0, gi["3g.40gb"], "replica-b")
    with pytest.raises(MigError, match="has no slice GI 14 for replica-c to lease"):
        agent.acquire_lease(0, 14, "replica-c")
    assert agent.leases() == [LeaseRecord(0, gi["4g.40gb"], "replica-a", 5000.0, False),
                              LeaseRecord(0, gi["3g.40gb"], "replica-b", 5000.0, False)]
    ops = agent.apply_layout(0, list(parse_layout("7g@0", "H100-80GB")))
    assert [(o.op, o.ok) for o in ops] == [("destroy", False)] and "In use by another client" in ops[0].error
    clock.advance(LEASE_TTL_S)  # replica-a stopped renewing; replica-b renews
    agent.acquire_lease(0, gi["3g.40gb"], "replica-b")
    assert [(x.owner, x.stale) for x in agent.leases()] == [("replica-a", True), ("replica-b", False)]
    assert [x.owner for x in agent.release_stale()] == ["replica-a"]
    assert [x.owner for x in agent.release_leases(["replica-b"])] == ["replica-b"]
    ops = agent.apply_layout(0, list(parse_layout("7g@0", "H100-80GB")))
    assert all(o.ok for o in ops) and agent.leases() == []


def test_destroyed_slices_take_their_stale_leases_with_them(tmp_path):
    clock = FakeClock(0.0)
    cfg = _cfg(tmp_path, gpus=1)
    devices = build_devices(cfg)
    devices = replace(devices, leases=type(devices.leases)(devices.leases.path, clock=clock))
    agent = NodeAgent(cfg, devices)
    agent.apply_layout(0, list(parse_layout("7g@0", "H100-80GB")))
    agent.acquire_lease(0, 0, "crashed-replica")
    clock.advance(LEASE_TTL_S + 1)
    assert all(o.ok for o in agent.apply_layout(0, list(parse_layout("3g@0", "H100-80GB"))))
    assert agent.leases() == []


def test_a_restarted_agent_rebuilds_its_view_from_the_devices(tmp_path):
    cfg = _cfg(tmp_path)
    first = NodeAgent(cfg)
    first.apply_layout(1, list(parse_layout("2g@0,2g@2,3g@4", "H100-80GB")))
    first.acquire_lease(1, first.info().gpus[1].slices[0].gi_id, "replica-x")
    second = NodeAgent(cfg)  # a new process on the same node: nothing but the state dir survives
    a, b = first.info(), second.info()
    assert b.gpus == a.gpus and b.started_at >= a.started_at
    assert second.leases() == first.leases()


def test_devices_can_be_injected_without_the_factory(tmp_path):
    """The agent asks nothing about what it drives: any NodeDevices works (here MPS with a stopped daemon)."""
    from mig.backend import make_backend
    from mig.leases import LeaseBook

    leases = LeaseBook()
    backend = make_backend("simulated", "mps", users=leases.live_owners, daemon=SimulatedDaemon(running=False))
    devices = NodeDevices(backend, leases, SimulatedGpuMeter({}), MeasuredBusy())
    agent = NodeAgent(AgentConfig("x"), devices)
    (gpu,) = agent.info().gpus
    assert not gpu.enabled and gpu.slices == ()
    ops = agent.apply_layout(0, list(parse_layout("7g@0", "H100-80GB-MPS")))
    assert not ops[0].ok and "nvidia-cuda-mps-control -d" in ops[0].error
