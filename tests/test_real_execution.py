"""`controller run --execution real` describes one machine (issue 13 item 7), as `controller demo`
does: the planner predicts with the profile of the device the replicas run on (given, or this
CPU's cached profile), the default SLA is that profile's base's, and run.log's `start` event
names the device, profile and meter. Bad profiles fail before Ray starts, with exit code 2."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from configs import load_services
from configs.loader import load_gpu_catalog
from configs.schema import HOST_CPU
from controller.cli import main as controller_main
from controller.loop import run_cmd
from controller.loop.real_execution import CLUSTER_METER, real_sla_ms
from controller.loop.settings import RunDevice
from controller.planning.model import DEFAULT_BATCH_SIZES, base_p95_ms
from gpu_node.cpu_profile import PROFILE_SECONDS, CpuProfileRequest, cache_path, device_name, with_power
from gpu_node.host_cpu import meter_description
from models.performance import PerformanceModel
from tests.test_host_cpu import cpu_profile_doc

EFFNET = load_services().get("efficientnet")
LOCAL_CPU = (("local/gpu0", HOST_CPU),)


def write_profile(path, drop: tuple[str, ...] = ()) -> str:
    """A CPU profile of b0 and the base b7 (as `gpu-node profile --device cpu` writes it), less `drop`."""
    doc = with_power(cpu_profile_doc(), load_gpu_catalog().get(HOST_CPU), "no RAPL zones")
    for key in drop:
        del doc["variants"][key]
    path.write_text(json.dumps(doc))
    return str(path)


def run_args(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_cmd.add_arguments(parser)
    return parser.parse_args(["--service", "efficientnet", "--variants", "b0", "--rate", "2",
                              "--run-dir", str(tmp_path / "run"), *extra])


def test_a_given_cpu_profile_plans_judges_and_names_the_run(tmp_path):
    profile = write_profile(tmp_path / "cpu.json")
    spec, agent = run_cmd.loop_spec(run_args(tmp_path, "--execution", "real", "--profile", profile))
    assert spec.profiles == (profile,)  # the loop's performance model is fitted to it, not the bundled H100's
    perf = PerformanceModel.from_profiles(spec.profiles)
    # the SLA is base's (b7's) on this CPU: over a second, where the simulated H100s give a few ms
    sla = spec.settings.sla_ms
    assert sla == pytest.approx(real_sla_ms(EFFNET, LOCAL_CPU, perf, 2.0))
    assert sla >= perf.batch_latency_ms("effnet:b7", HOST_CPU, 7, 1) - 0.01
    h100 = base_p95_ms(EFFNET, (("g0", "H100-80GB"), ("g1", "H100-80GB")), PerformanceModel.default(), 2.0)
    assert h100 < 50.0 < sla
    assert spec.settings.device == RunDevice(device_name(), f"{profile} (given)", meter_description())
    # --simulate-node on a local cluster starts this machine's CPU, not a simulated H100 node
    assert (agent.node, agent.simulate, agent.device, agent.gpu_type) == ("local", False, "cpu", HOST_CPU)
    assert agent.profile == profile


def test_an_sla_given_is_kept(tmp_path):
    profile = write_profile(tmp_path / "cpu.json")
    spec, _ = run_cmd.loop_spec(run_args(tmp_path, "--execution", "real", "--profile", profile, "--sla-ms", "900"))
    assert spec.settings.sla_ms == 900.0 and spec.settings.device is not None


def test_without_a_profile_this_cpus_cached_profile_is_used(tmp_path, monkeypatch):
    """The same cache as `controller demo`: a profile measured earlier for the same request is reused."""
    monkeypatch.setenv("CLOVER_CACHE_DIR", str(tmp_path / "cache"))
    req = CpuProfileRequest("efficientnet", ("b0",), DEFAULT_BATCH_SIZES, 1, PROFILE_SECONDS)
    cached = cache_path("efficientnet")
    cached.parent.mkdir(parents=True)
    doc = json.loads(Path(write_profile(tmp_path / "cpu.json")).read_text())
    cached.write_text(json.dumps({**doc, "request": req.key()}))
    spec, agent = run_cmd.loop_spec(run_args(tmp_path, "--execution", "real"))
    assert spec.profiles == (str(cached),) and agent.profile == str(cached)
    assert spec.settings.device.profile == f"{cached} (cached, reused)"


def test_the_simulated_run_keeps_the_bundled_model_and_its_node(tmp_path):
    spec, agent = run_cmd.loop_spec(run_args(tmp_path))
    assert spec.profiles == () and spec.settings.device is None and spec.settings.sla_ms is None
    assert agent.simulate and agent.gpu_type == "H100-80GB"


def test_with_remote_nodes_the_given_profile_describes_their_device(tmp_path):
    profile = write_profile(tmp_path / "cpu.json")
    spec, _ = run_cmd.loop_spec(run_args(tmp_path, "--execution", "real", "--profile", profile,
                                         "--address", "10.0.0.5:6379"))
    assert spec.profiles == (profile,)
    assert spec.settings.device == RunDevice(f"{HOST_CPU} on the cluster's nodes", f"{profile} (given)", CLUSTER_METER)
    assert spec.settings.sla_ms is None  # fixed by the loop from this profile on the GPUs the agents report


@pytest.mark.parametrize(("extra", "drop", "says"), [
    (("--execution", "real"), ("effnet:b7",), "has no runs of effnet:b7"),  # no base: no SLA, no counterfactual
    (("--execution", "real", "--variants", "b0,b1"), (), "has no runs of effnet:b1"),
    ((), (), "describe the device of --execution real"),  # a simulated run would ignore it
    (("--execution", "real", "--address", "10.0.0.5:6379"), ("effnet:b7",), "has no runs of effnet:b7"),
])
def test_a_bad_profile_fails_before_ray_with_exit_2(tmp_path, capsys, monkeypatch, extra, drop, says):
    monkeypatch.setattr("controller.serving.runtime.init_ray", lambda *a, **k: pytest.fail("Ray started"))
    profile = write_profile(tmp_path / "cpu.json", drop)
    argv = ["run", "--service", "efficientnet", "--variants", "b0", "--run-dir", str(tmp_path / "run"),
            "--profile", profile, *extra]
    assert controller_main(argv) == 2
    assert says in capsys.readouterr().err


def test_remote_nodes_need_their_profile(tmp_path, capsys):
    argv = ["run", "--service", "efficientnet", "--execution", "real", "--address", "10.0.0.5:6379"]
    assert controller_main(argv) == 2
    assert "give their device's profile with --profile FILE" in capsys.readouterr().err


def test_this_cpu_is_profiled_before_ray_starts(tmp_path, monkeypatch):
    """A CPU is profiled with the machine to itself: Ray's processes would slow and skew it."""
    order: list[str] = []
    real = run_cmd.prepare_real

    def recording(*args, **kwargs):
        order.append("profile")
        return real(*args, **kwargs)

    def no_ray(*_a, **_k):
        order.append("ray")
        raise ConnectionError("not in this test")

    monkeypatch.setattr(run_cmd, "prepare_real", recording)
    monkeypatch.setattr("controller.serving.runtime.init_ray", no_ray)
    args = run_args(tmp_path, "--execution", "real", "--profile", write_profile(tmp_path / "cpu.json"))
    assert run_cmd.run(args) == 2
    assert order == ["profile", "ray"]
