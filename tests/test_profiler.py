"""`gpu-node profile`: output in the bundled profiles' exact shape, energy through meter windows."""
from __future__ import annotations

import json
import time

import pytest

from configs.loader import PROFILE_DIR
from gpu_node import profiler
from gpu_node.cli import main
from gpu_node.meters.simulated import SimulatedGpuMeter
from gpu_node.profiler import (
    EnergyMeters,
    ProfileRequest,
    mig_profile_from_smi,
    nvml_device,
    summarize_run,
    visible_mig_device,
)
from tests.mps_fixtures import control, mps_env  # noqa: F401 - fixture

SHARED = json.loads((PROFILE_DIR / "h100-sxm_full-gpu.json").read_text())
SHARED_RUN_KEYS = list(SHARED["variants"]["effnet:b0"]["runs"][0])

# `nvidia-smi -L` on an H100 with two MIG slices (format of NVIDIA's driver 5xx output).
SMI_L = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.40gb     Device  0: (UUID: MIG-0b6e2a5b-7b3e-5a32-9a3e-2f1d8c0e4d11)
  MIG 1g.10gb     Device  1: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLOVER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "clover-cache"))


def test_summary_has_the_shared_run_fields_in_order():
    run = summarize_run(8, "fp16", [0.010, 0.012, 0.011, 0.030], wall_s=0.063, energy_j=12.6,
                        sampled_energy_j=12.0, max_mem_gib=0.25)
    assert list(run) == SHARED_RUN_KEYS
    assert run["iters"] == 4 and run["lat_ms_p50"] == pytest.approx(11.5)
    assert run["lat_ms_mean"] == pytest.approx(15.75)
    assert run["items_per_s"] == pytest.approx(32 / 0.063, rel=1e-3)
    assert run["avg_power_w_counter"] == pytest.approx(200.0)
    assert run["avg_power_w_sampled"] == pytest.approx(190.48, rel=1e-3)
    assert run["energy_j_per_item"] == pytest.approx(12.6 / 32, rel=1e-4)
    unmetered = summarize_run(1, "fp32", [0.01], 0.01, None, None, None)
    assert unmetered["energy_j"] is unmetered["energy_j_per_item"] is unmetered["avg_power_w_counter"] is None


def test_mig_slice_is_recognised():
    assert mig_profile_from_smi(SMI_L, "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f") == "1g.10gb"
    assert mig_profile_from_smi(SMI_L, "MIG-0b6e2a5b-7b3e-5a32-9a3e-2f1d8c0e4d11") == "3g.40gb"
    assert mig_profile_from_smi(SMI_L, "MIG-unknown") is None
    mig_env = {"CUDA_VISIBLE_DEVICES": "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"}
    assert visible_mig_device("cuda", mig_env) == mig_env["CUDA_VISIBLE_DEVICES"]
    assert visible_mig_device("cuda", {"CUDA_VISIBLE_DEVICES": "0"}) is None
    assert visible_mig_device("cuda", {}) is None


def test_cuda_device_maps_to_the_nvml_device_it_runs_on():
    assert nvml_device("cuda", {}) == "0"
    assert nvml_device("cuda:3", {}) == "3"
    assert nvml_device("cuda:1", {"CUDA_VISIBLE_DEVICES": "5,GPU-abc"}) == "GPU-abc"
    assert nvml_device("cuda", {"CUDA_VISIBLE_DEVICES": "MIG-x, 2"}) == "MIG-x"
    with pytest.raises(ValueError, match="lists only 1"):
        nvml_device("cuda:1", {"CUDA_VISIBLE_DEVICES": "2"})


class _ConstantPowerGpu:
    """Stand-in for a GPU's NVML energy counter: a steady 150 W (mJ, monotonic)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def total_energy_mj(self) -> int:
        return int((time.monotonic() - self.t0) * 150_000)


def test_energy_comes_from_meter_windows():
    from models.runner import ModelRunner

    runner = ModelRunner("efficientnet", "b0")
    meters = EnergyMeters(SimulatedGpuMeter({"gpu0": _ConstantPowerGpu()}), None, "simulated")
    req = ProfileRequest("efficientnet", duration_s=0.3, warmup_s=0.0)
    run = profiler.time_batch(runner, 2, req, meters)
    assert run["energy_j"] == pytest.approx(150 * run["wall_s"], rel=0.05)
    assert run["avg_power_w_counter"] == pytest.approx(150, rel=0.05)
    assert run["energy_j_per_item"] == pytest.approx(run["energy_j"] / (2 * run["iters"]), rel=1e-3)
    assert run["avg_power_w_sampled"] is None


def test_cli_writes_a_profile_the_performance_model_accepts(tmp_path):
    out = tmp_path / "cpu.json"
    rc = main(["profile", "--service", "efficientnet", "--variants", "b0", "--batches", "1,2",
               "--duration", "0.3", "--warmup", "0.1", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(SHARED["info"]) <= set(doc["info"])
    assert doc["info"]["device"] == "cpu" and doc["info"]["cpu_threads"] >= 1
    entry = doc["variants"]["effnet:b0"]
    assert entry["params"] == SHARED["variants"]["effnet:b0"]["params"]
    assert [r["batch"] for r in entry["runs"]] == [1, 2]
    for run in entry["runs"]:
        assert list(run) == SHARED_RUN_KEYS
        assert run["dtype"] == "fp32" and run["iters"] >= 3 and run["lat_ms_p50"] > 0
        assert run["energy_j"] is None  # no RAPL/NVML on this machine

    # A CPU profile is the catalog's host CPU at its serving dtype (fp32), fitted to its own cores.
    models_performance = pytest.importorskip("models.performance")
    cpu = models_performance.PerformanceModel.from_profiles([out])
    assert cpu.reference_gpu_type == "CPU" and cpu.variants() == ["effnet:b0"]
    lat = {r["batch"]: r["lat_ms_mean"] for r in entry["runs"]}
    assert cpu.batch_latency_ms("effnet:b0", "CPU", 7, 2) == pytest.approx(lat[2], rel=0.5)
    # A CUDA run writes a catalogued GPU and fp16 runs; relabelling exactly those fields (and the
    # device) shows the rest of the shape is accepted as a GPU's profile.
    doc["info"]["gpu"], doc["info"]["device"] = SHARED["info"]["gpu"], "cuda"
    for run in entry["runs"]:
        run["dtype"] = "fp16"
    relabelled = tmp_path / "as-gpu.json"
    relabelled.write_text(json.dumps(doc))
    perf = models_performance.PerformanceModel.from_profiles([relabelled])
    assert "effnet:b0" in perf.variants()
    assert perf.batch_latency_ms("effnet:b0", "H100-80GB", 7, 1) > 0


def test_cli_rejects_unknown_variants(tmp_path, capsys):
    rc = main(["profile", "--service", "efficientnet", "--variants", "b9", "--out", str(tmp_path / "x.json")])
    assert rc == 2
    assert not (tmp_path / "x.json").exists()


def test_compare_profiles_pairs_runs_and_computes_ratios(monkeypatch):
    import importlib.util
    import sys

    path = PROFILE_DIR.parent.parent / "bench" / "compare_profiles.py"
    spec = importlib.util.spec_from_file_location("compare_profiles", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "compare_profiles", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    mps = json.loads((PROFILE_DIR / "h100-sxm_mps-100pct.json").read_text())
    rows = mod.compare(mps, SHARED)
    assert len(rows) == sum(len(v["runs"]) for v in mps["variants"].values())  # all fp16 runs pair up
    row = next(r for r in rows if (r.variant, r.dtype, r.batch) == ("effnet:b7", "fp16", 8))
    assert row.ratio("lat_ms_p50") == pytest.approx(row.new["lat_ms_p50"] / row.ref["lat_ms_p50"])
    assert mod.compare(SHARED, SHARED)[0].ratio("items_per_s") == pytest.approx(1.0)


def test_profile_mps_shares_one_process_each_with_the_daemon_running(tmp_path, mps_env, capsys):  # noqa: F811
    """`--mps-percent`: refused without the daemon (with the command to start it); with it, one
    process per share, each file in the bundled shape and fitted at its share's SM fraction."""
    argv = ["profile", "--service", "efficientnet", "--variants", "b0", "--batches", "1,2", "--duration", "0.2",
            "--warmup", "0.05", "--mps-percent", "29,100", "--out", str(tmp_path / "cpu.json")]
    assert main(argv) == 2
    assert "nvidia-cuda-mps-control -d" in capsys.readouterr().err
    assert main([*argv[:-4], "--mps-percent", "0,50", "--out", str(tmp_path / "cpu.json")]) == 2
    assert control("-d").returncode == 0
    assert main(argv) == 0
    docs = {p: json.loads((tmp_path / f"cpu_mps-{p}pct.json").read_text()) for p in (29, 100)}
    assert {p: d["info"]["mps_active_thread_pct"] for p, d in docs.items()} == {29: "29", 100: "100"}
    for doc in docs.values():
        assert [list(r) for r in doc["variants"]["effnet:b0"]["runs"]] == [SHARED_RUN_KEYS] * 2
        doc["info"]["gpu"], doc["info"]["device"] = SHARED["info"]["gpu"], "cuda"  # relabelled as in the test above
        for run in doc["variants"]["effnet:b0"]["runs"]:
            run["dtype"] = "fp16"
    paths = []
    for p, doc in docs.items():
        paths.append(tmp_path / f"gpu_mps-{p}pct.json")
        paths[-1].write_text(json.dumps(doc))
    from models.profile_points import load_points

    assert sorted({pt.sm_fraction for pt in load_points(paths)}) == [0.29, 1.0]
