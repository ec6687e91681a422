"""`gpu-node setup --system --partition mps`: the MPS control daemon is checked, and the operator
is told exactly how to start it; MIG must be off for MPS shares."""
from gpu_node.cli import main
from gpu_node.devices import AgentConfig
from gpu_node.node_check import GpuCheck, NodeReport, assess, check_nvml
from gpu_node.setup_cmd import check_node
from mig.mps import MpsControl
from tests.fake_nvml import H100_UUID, FakeClock, FakeGpu, FakeNvml
from tests.mps_fixtures import control, mps_env  # noqa: F401 - fixture


def test_mps_check_needs_the_daemon_and_mig_off(mps_env):  # noqa: F811
    down = MpsControl().status()
    r = assess(NodeReport("580.1", False, [GpuCheck(0, "NVIDIA H200", True, False)], partitioning="mps",
                          mps_daemon=down))
    assert not r.ok and f"CUDA_MPS_PIPE_DIRECTORY={mps_env} nvidia-cuda-mps-control -d" in r.problems[0]
    assert "no GPU reset" in r.problems[0]
    assert control("-d").returncode == 0
    up = MpsControl().status()
    r = assess(NodeReport("580.1", False, [GpuCheck(0, "NVIDIA H200", True, False),
                                           GpuCheck(1, "NVIDIA H100 80GB HBM3", True, True)],
                          partitioning="mps", mps_daemon=up))
    assert r.problems == [r.problems[0]] and "GPU 1" in r.problems[0] and "--disable" in r.problems[0]
    assert not r.warnings  # MIG off is what MPS wants: no "enable MIG" advice


def test_simulated_mps_node_check_and_setup_refusal(tmp_path, capsys, mps_env):  # noqa: F811
    report = check_node(AgentConfig("sim", gpus=2, state_dir=str(tmp_path / "sim"), partition="mps"))
    assert report.ok and report.partitioning == "mps" and [g.mig_enabled for g in report.gpus] == [False, False]
    # a real node (no --simulate) without NVIDIA driver here: setup stops before `ray start`, exit 2
    rc = main(["setup", "--system", "--partition", "mps", "--node-name", "gpu0", "--state-dir", str(tmp_path / "r")])
    assert rc == 2
    assert "gpu-node setup: cannot initialise NVML" in capsys.readouterr().err


class _DriverNvml(FakeNvml):
    """The fake pynvml plus what the node check reads: driver version, names, MIG mode (off)."""

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetName(self, h) -> str:
        return "NVIDIA H200"

    def nvmlDeviceGetMigMode(self, h) -> list[int]:
        return [0, 0]


def test_real_node_check_reads_nvml_and_the_daemon(mps_env):  # noqa: F811
    nvml = _DriverNvml(FakeClock(), [FakeGpu(0, H100_UUID)])
    down = check_nvml(nvml, daemon=MpsControl())
    assert not down.ok and down.problems == [MpsControl().status().detail]
    assert "nvidia-cuda-mps-control -d" in down.problems[0]
    assert control("-d").returncode == 0
    up = check_nvml(nvml, daemon=MpsControl())
    assert up.ok and up.partitioning == "mps" and up.mps_daemon.running and up.driver == "580.159.04"
    mig = check_nvml(nvml)  # the same GPU for MIG: MIG is off, so the operator is told both ways out
    assert mig.ok and "--partition mps (no reset)" in mig.warnings[0]
