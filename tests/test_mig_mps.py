"""The MPS partition backend: shares in MIG's shapes, the MPS environment, the daemon check."""
import json
import os

import pytest

from gpu_node.cli import main
from mig.backend import PartitionBackend, make_backend, simulated_mps_gpus
from mig.errors import InstanceInUseError, MigError, PlacementError, UnknownProfileError
from mig.leases import LEASE_TTL_S, LeaseBook
from mig.mps import MpsBackend, MpsControl, MpsDaemonError, SimulatedDaemon
from mig.placement import parse_layout
from mig.repartition import apply_plan, plan_repartition
from mig.types import GpuInfo
from tests.fake_nvml import FakeClock
from tests.mps_fixtures import control, mps_env  # noqa: F401 - fixture

H100_MPS = "H100-80GB-MPS"


def _mps(tmp_path, daemon=None, leases=None, gpus=(("H100-80GB", 2),)):
    return make_backend("simulated", "mps", state_file=tmp_path / "mps-state.json", gpus=list(gpus),
                        users=leases.live_owners if leases else None, daemon=daemon or SimulatedDaemon())


def test_simulated_mps_gpus_are_the_mps_twins_and_enabled_while_the_daemon_runs(tmp_path):
    daemon = SimulatedDaemon()
    b = _mps(tmp_path, daemon, gpus=[("H100-80GB", 1), ("L4-24GB", 1)])
    assert isinstance(b, PartitionBackend) and b.partitioning == "mps"
    gpus = b.list_gpus()
    assert [(g.gpu_type, g.partitioning, g.enabled, g.mig_enabled) for g in gpus] == [
        (H100_MPS, "mps", True, False), ("L4-24GB", "mps", True, False)]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[1].name == "NVIDIA L4"
    daemon.running = False
    assert [g.enabled for g in b.list_gpus()] == [False, False]


def test_a_layout_is_shares_in_mig_shapes_with_the_mps_environment(tmp_path):
    b = _mps(tmp_path)
    target = parse_layout("4g@0,3g@4", H100_MPS)
    apply_plan(b, 1, plan_repartition(b.list_instances(1), target))
    gpu = b.list_gpus()[1]
    shares = b.list_instances(1)
    assert [(s.profile, s.start, s.size, s.gi_id) for s in shares] == [("4g.40gb", 0, 4, 1), ("3g.40gb", 4, 4, 2)]
    assert {s.uuid for s in shares} == {gpu.uuid}  # a share is the whole GPU, limited by MPS
    envs = {s.profile: b.slice_env(gpu, s) for s in shares}
    assert envs["4g.40gb"] == {"CUDA_VISIBLE_DEVICES": gpu.uuid, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "57",
                               "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={int(39.8 * 1024)}M"}
    assert envs["3g.40gb"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "43"
    assert b.list_instances(0) == []  # the other GPU is untouched
    with pytest.raises(PlacementError, match="Unable to create an MPS share on GPU 1 .*Insufficient Resources"):
        b.create_instance(1, "2g.20gb", 4)
    with pytest.raises(UnknownProfileError, match="Invalid Argument"):
        b.create_instance(1, "5g.50gb", 0)
    with pytest.raises(MigError, match="Unable to destroy MPS share ID 9 from GPU 1: Not Found"):
        b.destroy_instance(1, 9)


def test_shares_persist_by_gpu_uuid_across_a_restart(tmp_path):
    a = _mps(tmp_path)
    made = a.create_instance(0, "7g.80gb", 0)
    b = _mps(tmp_path)  # the restarted agent reads the same file
    assert b.list_instances(0) == [made]
    doc = json.loads((tmp_path / "mps-state.json").read_text())
    assert list(doc["gpus"]) == [a.list_gpus()[0].uuid] and doc["version"] == 1


def test_no_share_without_the_daemon_and_the_error_says_how_to_start_it(tmp_path):
    b = _mps(tmp_path, SimulatedDaemon(running=False))
    with pytest.raises(MpsDaemonError, match="nvidia-cuda-mps-control -d.*no GPU reset"):
        b.create_instance(0, "1g.10gb", 0)


def test_a_live_lease_blocks_destroying_a_share_a_stale_one_never(tmp_path):
    clock = FakeClock()
    leases = LeaseBook(tmp_path / "leases.json", clock=clock)
    b = _mps(tmp_path, leases=leases)
    share = b.create_instance(0, "2g.20gb", 2)
    leases.acquire(0, share.gi_id, "replica-x")
    with pytest.raises(InstanceInUseError, match="In use by another client .*replica-x"):
        b.destroy_instance(0, share.gi_id)
    clock.advance(LEASE_TTL_S)
    b.destroy_instance(0, share.gi_id)
    assert b.list_instances(0) == []


def test_mps_backend_over_the_real_daemon_check_and_a_gpu_without_mps_entry(tmp_path, mps_env):  # noqa: F811
    gpus = simulated_mps_gpus([("H100-80GB", 1)])
    unknown = [GpuInfo(0, "GPU-x", "Tesla T4", "", True, "mps")]
    assert MpsBackend(lambda: gpus, MpsControl(), tmp_path / "s.json").list_gpus()[0].enabled is False
    assert control("-d").returncode == 0
    b = MpsBackend(lambda: gpus, MpsControl(), tmp_path / "s.json")
    assert b.list_gpus()[0].enabled
    made = b.create_instance(0, "1g.10gb", 3)
    assert b.slice_env(gpus[0], made)["CUDA_MPS_PIPE_DIRECTORY"] == str(mps_env)  # clients must find the daemon
    with pytest.raises(MigError, match="Tesla T4.*no MPS entry in configs/gpus.yaml"):
        MpsBackend(lambda: unknown, MpsControl(), tmp_path / "t.json").list_instances(0)


def test_daemon_check_follows_the_daemon_process(mps_env):  # noqa: F811
    status = MpsControl().status()
    assert not status.running and f"CUDA_MPS_PIPE_DIRECTORY={mps_env} nvidia-cuda-mps-control -d" in status.detail
    assert control(stdin="get_server_list\n").stdout.strip() == "Cannot find MPS control daemon process"
    assert control("-d").returncode == 0
    status = MpsControl().status()
    assert status.running and str(mps_env) in status.detail
    pid = int((mps_env / "nvidia-cuda-mps-control.pid").read_text())
    assert control(stdin="quit\n").returncode == 0
    assert not MpsControl().status().running
    (mps_env / "nvidia-cuda-mps-control.pid").write_text(f"{pid}\n")  # a PID file left behind by a crash
    assert "no live process" in MpsControl().status().detail
    (mps_env / "nvidia-cuda-mps-control.pid").write_text("garbage")
    assert "no PID in" in MpsControl().status().detail


def test_daemon_check_without_the_tool_installed(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    status = MpsControl().status()
    assert not status.running and "not found on PATH" in status.detail


def test_mig_cli_lists_and_applies_mps_shares(tmp_path, capsys):
    state = str(tmp_path / "mps-state.json")
    args = ["--partition", "mps", "--state", state, "--gpus", "L4-24GB:1"]
    assert main(["mig", "apply", "--gpu", "0", "--layout", "4g@0,2g@4,1g@6", *args]) == 0
    assert "done: 3 operations" in capsys.readouterr().out
    assert main(["mig", "list", "--json", *args]) == 0
    (gpu,) = json.loads(capsys.readouterr().out)
    assert (gpu["gpu_type"], gpu["partitioning"], gpu["enabled"]) == ("L4-24GB", "mps", True)
    shares = {i["profile"]: i["env"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] for i in gpu["instances"]}
    assert shares == {"4g.12gb": "57", "2g.6gb": "29", "1g.3gb": "14"}
    assert main(["mig", "list", *args]) == 0
    assert "[L4-24GB] " in capsys.readouterr().out
    assert main(["mig", "enable", "--gpu", "0", "--yes", *args]) == 2
    assert "MPS shares need no mode switch" in capsys.readouterr().err
    assert os.path.exists(state)
