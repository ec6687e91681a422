"""This CPU's profile for `--execution real` (issue 13 item 7): measured at start-up with the real
profiler, cached, reused for the same request and measured again for another; its power figures
(estimated and flagged where RAPL is unreadable); and the SLA the demo derives from it."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from configs import load_services
from configs.loader import load_gpu_catalog
from configs.schema import HOST_CPU
from controller.loop.real_execution import real_sla_ms
from controller.planning.model import base_p95_ms
from gpu_node.cpu_profile import CpuProfileRequest, cpu_profile, measure, with_power
from models.performance import PerformanceModel
from models.runner import available_cpus
from tests.test_host_cpu import cpu_profile_doc

REQ = CpuProfileRequest("efficientnet", ("b0",), (1, 2), threads=1, duration_s=0.02)
EFFNET = load_services().get("efficientnet")
CPU = (("node0/gpu0", HOST_CPU),)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("clover-cache")
    mp.setenv("CLOVER_CACHE_DIR", str(path))
    yield path
    mp.undo()


def test_the_profile_is_measured_once_reused_and_measured_again_for_other_variants(cache):
    measured: list[tuple[str, ...]] = []

    def counting(req: CpuProfileRequest) -> dict:
        measured.append(req.variants)
        return measure(req)

    first = cpu_profile(REQ, measure_fn=counting)
    assert first.path == cache / "profiles" / f"cpu-efficientnet-{available_cpus()}cores-torch{torch.__version__}.json"
    assert not first.reused and "measured at start-up" in first.describe()
    doc = json.loads(first.path.read_text())
    assert doc["request"] == REQ.key() and doc["info"]["device"] == "cpu" and doc["info"]["cpu_threads"] == 1
    runs = {k: [r["batch"] for r in v["runs"]] for k, v in doc["variants"].items()}
    assert runs == {"effnet:b0": [1, 2], "effnet:b7": [1]}  # the planner's variants, and base for the SLA
    written = first.path.stat().st_mtime_ns

    again = cpu_profile(REQ, measure_fn=counting)
    assert again.reused and again.path == first.path and again.describe().endswith("(cached, reused)")
    assert measured == [("b0",)] and first.path.stat().st_mtime_ns == written

    other = cpu_profile(replace(REQ, variants=("b0", "b1")), measure_fn=counting)
    assert not other.reused and measured == [("b0",), ("b0", "b1")]
    assert set(json.loads(other.path.read_text())["variants"]) == {"effnet:b0", "effnet:b1", "effnet:b7"}
    threads = cpu_profile(replace(REQ, variants=("b0", "b1"), threads=2), measure_fn=lambda _req: doc)
    assert not threads.reused  # the thread count changes CPU timings too


def test_a_damaged_cache_file_is_measured_again(tmp_path):
    path = tmp_path / "cpu.json"
    path.write_text("{not json")
    doc = cpu_profile_doc()
    profile = cpu_profile(REQ, path=path, measure_fn=lambda _req: doc)
    assert not profile.reused and json.loads(path.read_text())["variants"] == doc["variants"]


def test_unmetered_profiles_get_estimated_power_flagged_with_the_reason():
    doc = cpu_profile_doc(cores=4, threads=2)
    host = load_gpu_catalog().get(HOST_CPU).scaled_to(4)
    out = with_power(doc, load_gpu_catalog().get(HOST_CPU), "no RAPL zones under /sys/class/powercap")
    assert doc["info"]["idle_power_w"] is None  # pure: the input is left alone
    info = out["info"]
    assert info["energy_meter"] == "estimated" and "no RAPL zones" in info["energy_note"]
    assert (info["idle_power_w"], info["max_power_w"]) == (host.idle_power_w, host.max_power_w)
    busy_w = host.idle_power_w + (host.max_power_w - host.idle_power_w) * 2 / 4
    for runs in (v["runs"] for v in out["variants"].values()):
        for r in runs:
            assert r["avg_power_w_counter"] == pytest.approx(busy_w)
            assert r["energy_j"] == pytest.approx(busy_w * r["wall_s"], abs=1e-3)
            assert r["energy_j_per_item"] == pytest.approx(r["energy_j"] / (r["iters"] * r["batch"]), rel=1e-3)


def test_measured_power_is_kept():
    doc = cpu_profile_doc(cores=4)
    doc["info"]["idle_power_w"] = 6.0
    for v in doc["variants"].values():
        for r in v["runs"]:
            r["avg_power_w_counter"], r["energy_j"] = 60.0, 60.0 * r["wall_s"]
    out = with_power(doc, load_gpu_catalog().get(HOST_CPU), None)
    assert out["variants"] == doc["variants"] and out["info"]["energy_meter"] is None  # nothing estimated
    assert out["info"]["idle_power_w"] == 6.0 and out["info"]["max_power_w"] == 60.0  # above the nominal 20 W


def test_the_sla_comes_from_the_cpu_profiles_base_variant(tmp_path):
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(with_power(cpu_profile_doc(), load_gpu_catalog().get(HOST_CPU), "test")))
    perf = PerformanceModel.from_profiles([path])
    b7_ms = perf.batch_latency_ms("effnet:b7", HOST_CPU, 7, 1)  # 1.6 s a pass on this "CPU"
    carried = 0.3 * 1000.0 / b7_ms
    assert real_sla_ms(EFFNET, CPU, perf, carried) == pytest.approx(base_p95_ms(EFFNET, CPU, perf, carried))
    assert b7_ms < real_sla_ms(EFFNET, CPU, perf, carried) < 3 * b7_ms
    # b7 cannot carry 2 req/s on it at all: the SLA is its latency for a request alone
    assert math.isinf(base_p95_ms(EFFNET, CPU, perf, 2.0))
    assert real_sla_ms(EFFNET, CPU, perf, 2.0) == pytest.approx(b7_ms, rel=1e-3)
    # CPU-scale, not the simulated H100's (a few ms there)
    h100 = real_sla_ms(EFFNET, (("g0", "H100-80GB"), ("g1", "H100-80GB")), PerformanceModel.default(), 2.0)
    assert h100 < 50.0 < b7_ms
