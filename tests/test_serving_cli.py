"""Bad input to the serving commands fails fast with an actionable message (no Ray started)."""
import socket
import time
from pathlib import Path

import pytest

from configs.cluster import node_resources
from controller.cli import main as controller_main
from gpu_node.cli import main as gpu_node_main
from gpu_node.node_check import (
    GpuCheck,
    NodeReport,
    assess,
    check_nvml,
    check_simulated,
)
from gpu_node.setup_cmd import ray_start_command


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


def test_unknown_service_lists_the_known_ones(capsys):
    assert controller_main(["--service", "resnet"]) == 2
    err = capsys.readouterr().err
    assert "unknown service 'resnet'" in err and "yolo" in err and "albert" in err


def test_controller_with_unreachable_ray_address_fails_fast(capsys):
    t0 = time.monotonic()
    assert controller_main(["--service", "yolo", "--address", f"127.0.0.1:{_closed_port()}"]) == 2
    assert time.monotonic() - t0 < 10
    assert "cannot reach the Ray cluster" in capsys.readouterr().err


def test_gpu_node_setup_with_unreachable_address_fails_fast(capsys, tmp_path):
    port = _closed_port()
    rc = gpu_node_main(["setup", "--system", "--simulate", "--address", f"127.0.0.1:{port}",
                        "--state-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "ray start --head" in err


def test_bad_address_form_is_explained(capsys):
    assert gpu_node_main(["setup", "--system", "--simulate", "--address", "headnode"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_setup_needs_the_system_flag(capsys):
    assert gpu_node_main(["setup", "--simulate"]) == 2
    assert "--system" in capsys.readouterr().err


def test_join_command_carries_the_node_resources_without_a_shell():
    cmd = ray_start_command("10.0.0.5:6379", 6379, node_resources("gpu7", 14))
    assert Path(cmd[0]).name == "ray" and cmd[1] == "start" and "--address=10.0.0.5:6379" in cmd
    assert '--resources={"clover_node_gpu7": 1000, "clover_mig_slice": 14}' in cmd
    assert "--head" in ray_start_command(None, 6380, node_resources("x", 0))
    assert "--node-ip-address=127.0.0.1" in ray_start_command(None, 6380, node_resources("x", 7), "127.0.0.1")


def test_node_check_explains_mig_off_and_pending():
    r = assess(NodeReport("580.1", False, [GpuCheck(0, "H100", True, False), GpuCheck(1, "H100", True, False, True),
                                           GpuCheck(2, "T4", False, False)]))
    assert r.ok
    text = " ".join(r.warnings)
    assert "gpu-node mig enable --gpu 0" in text and "--gpu-reset -i 1" in text and "does not support MIG" in text
    assert not assess(NodeReport(None, False, [])).ok


def test_node_check_without_driver_says_so():
    r = check_nvml()  # no NVIDIA driver on this machine: NVMLError_LibraryNotFound
    assert not r.ok and "--simulate" in r.problems[0]


def test_simulated_node_check_reads_the_backend(tmp_path):
    from mig.simulated import SimulatedMigBackend

    r = check_simulated(SimulatedMigBackend([("H100-80GB", 2)], tmp_path / "s.json"))
    assert r.ok and [g.mig_enabled for g in r.gpus] == [True, True] and r.partitioning == "mig"


@pytest.mark.parametrize("argv", [["demo", "--duration", "0s"], ["demo", "--duration", "soon"]])
def test_demo_rejects_bad_duration(argv, capsys):
    assert controller_main(argv) == 2
    assert "expected a positive duration" in capsys.readouterr().err
