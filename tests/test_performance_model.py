"""Performance model fitted to the real H100 profiles in configs/profiles."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from configs.loader import load_services, profile_paths
from models.performance import CUDA_CONTEXT_GIB, PerformanceModel
from models.performance_validation import in_sample, leave_one_out, summarize
from models.profile_points import ProfileError, load_points

H100 = "H100-80GB"
SLICES = (1, 2, 3, 4, 7)


@pytest.fixture(scope="module")
def model() -> PerformanceModel:
    return PerformanceModel.default()


def test_default_is_cached_and_knows_every_service_variant(model):
    assert PerformanceModel.default() is model
    keys = {v.profile_key for s in load_services().services.values() for v in s.variants}
    assert keys <= set(model.variants())
    assert len(model.variants()) == 19


def test_unknown_variant_names_the_known_ones(model):
    with pytest.raises(KeyError, match=r"unknown variant 'yolo:yolo99'.*known: .*yolo:yolo11n"):
        model.batch_latency_ms("yolo:yolo99", H100, 1, 1)


def test_bad_slices_and_batch_are_rejected(model):
    with pytest.raises(ValueError, match="compute_slices=5.*one of \\[1, 2, 3, 4, 7\\]"):
        model.batch_latency_ms("yolo:yolo11n", H100, 5, 1)
    with pytest.raises(ValueError, match="batch"):
        model.batch_latency_ms("yolo:yolo11n", H100, 1, 0)
    with pytest.raises(KeyError, match="unknown GPU type"):
        model.idle_power_w("V100")


def test_slice_sm_fractions_follow_the_catalog(model):
    assert model.slice_sms_fraction(H100, 1) == pytest.approx(16 / 132)
    assert model.slice_sms_fraction(H100, 7) == 1.0
    assert model.slice_sms_fraction("A100-40GB", 3) == pytest.approx(42 / 108)  # MIG leaves 10 of 108 SMs unused even at 7g
    assert model.slice_sms_fraction("A100-40GB", 7) == pytest.approx(98 / 108)


@pytest.mark.parametrize("variant", PerformanceModel.default().variants())
def test_latency_monotone_in_batch_and_slices(model, variant):
    for k in SLICES:
        lats = [model.batch_latency_ms(variant, H100, k, b) for b in (1, 2, 4, 8, 16, 32)]
        assert lats == sorted(lats), (variant, k, lats)
    for b in (1, 8, 32):
        lats = [model.batch_latency_ms(variant, H100, k, b) for k in SLICES]
        assert lats == sorted(lats, reverse=True), (variant, b, lats)
        assert model.throughput_rps(variant, H100, 7, b) == pytest.approx(b * 1000 / lats[-1])
        assert 0 < model.busy_power_w(variant, H100, 1, b) <= 700 - 74.5


def test_reproduces_measured_slice_points(model):
    # ALBERT-xxlarge, batch 8: 183 ms at 12 % SMs and 32.6 ms on the whole GPU (profiles README)
    assert model.batch_latency_ms("albert:xxlarge", H100, 1, 8) == pytest.approx(183, rel=0.15)
    assert model.batch_latency_ms("albert:xxlarge", H100, 7, 8) == pytest.approx(32.6, rel=0.15)
    assert model.busy_power_w("albert:xxlarge", H100, 1, 8) == pytest.approx(296.3 - 76.5, rel=0.25)


def test_small_models_gain_from_seven_small_slices(model):
    one_big = model.throughput_rps("yolo:yolo11n", H100, 7, 8)
    assert 7 * model.throughput_rps("yolo:yolo11n", H100, 1, 8) > 3 * one_big
    # a large model scales about linearly with the SM share instead
    ratio = model.batch_latency_ms("albert:xxlarge", H100, 1, 8) / model.batch_latency_ms("albert:xxlarge", H100, 7, 8)
    assert ratio > 4


def test_whole_gpu_only_variants_slow_down_on_slices(model):
    # yolo11l was measured on the whole GPU only (its batch-8 latency is below its batch-1 one)
    assert model.fit("yolo:yolo11l").latency_source == "whole-gpu+energy"
    assert model.batch_latency_ms("yolo:yolo11l", H100, 1, 8) > 2 * model.batch_latency_ms("yolo:yolo11l", H100, 7, 8)


def test_error_against_measured_points_stays_small():
    points = load_points(profile_paths())
    fitted = summarize(in_sample(points, 700 - 74.5))
    loo = summarize(leave_one_out(points, 700 - 74.5))
    assert fitted.points == 108 and loo.points == 56
    assert fitted.latency_median < 0.12 and fitted.power_median < 0.12
    assert loo.latency_median < 0.20 and loo.power_median < 0.15


def test_other_gpu_types_are_scaled_from_the_h100(model):
    v = "effnet:b7"
    assert model.batch_latency_ms(v, "A100-40GB", 7, 8) > 1.5 * model.batch_latency_ms(v, H100, 7, 8)
    assert model.batch_latency_ms(v, "H200-141GB", 7, 8) < model.batch_latency_ms(v, H100, 7, 8)
    assert model.busy_power_w(v, "A100-40GB", 7, 8) < model.busy_power_w(v, H100, 7, 8)
    assert model.idle_power_w("A100-40GB") == 55.0
    assert model.idle_power_w(H100) == 74.5


def test_memory_grows_with_batch(model):
    m1, m32 = model.memory_gib("yolo:yolo11x", 1), model.memory_gib("yolo:yolo11x", 32)
    assert CUDA_CONTEXT_GIB < m1 < m32 < 9.75  # fits a 1g.10gb slice


def test_tail_ratio_from_measured_percentiles(model):
    assert all(1.0 <= model.latency_p99_ratio(v) < 10 for v in model.variants())


def test_partition_factor_slows_slices_of_its_partitioning_only():
    base = PerformanceModel.default()
    penal = PerformanceModel.from_profiles(profile_paths(), partition_factors={"mig": 1.2})
    mps = "H100-80GB-MPS"
    assert penal.batch_latency_ms("yolo:yolo11x", H100, 2, 8) == pytest.approx(1.2 * base.batch_latency_ms("yolo:yolo11x", H100, 2, 8))
    assert penal.batch_latency_ms("yolo:yolo11x", H100, 7, 8) == pytest.approx(base.batch_latency_ms("yolo:yolo11x", H100, 7, 8))
    assert penal.batch_latency_ms("yolo:yolo11x", mps, 2, 8) == pytest.approx(base.batch_latency_ms("yolo:yolo11x", mps, 2, 8))
    interfered = PerformanceModel.from_profiles(profile_paths(), partition_factors={"mps": 1.3})
    assert interfered.batch_latency_ms("effnet:b0", mps, 3, 8) == pytest.approx(1.3 * base.batch_latency_ms("effnet:b0", mps, 3, 8))
    with pytest.raises(ValueError, match="partition_factors"):
        PerformanceModel.from_profiles(profile_paths(), partition_factors={"mig": 0.9})
    with pytest.raises(ValueError, match="partition_factors"):
        PerformanceModel.from_profiles(profile_paths(), partition_factors={"vgpu": 1.1})


def test_mps_shares_use_their_thread_percentage_as_sm_fraction(model):
    """An MPS 3g share is 43 % of the SMs (57 of 132), the MIG 3g instance 60 of 132: MPS's is slower."""
    assert model.slice_sms_fraction("H100-80GB-MPS", 3) == pytest.approx(57 / 132)
    assert model.batch_latency_ms("albert:xxlarge", "H100-80GB-MPS", 3, 8) > model.batch_latency_ms("albert:xxlarge", H100, 3, 8)
    assert model.batch_latency_ms("albert:xxlarge", "H100-80GB-MPS", 7, 8) == pytest.approx(
        model.batch_latency_ms("albert:xxlarge", H100, 7, 8))


def _copy_profiles(tmp_path: Path) -> list[Path]:
    return [Path(shutil.copy(p, tmp_path / p.name)) for p in profile_paths()]


def test_profiles_without_energy_borrow_power_from_the_family(tmp_path):
    paths = _copy_profiles(tmp_path)
    for p in paths:
        doc = json.loads(p.read_text())
        for run in doc["variants"].get("yolo:yolo11l", {}).get("runs", []):
            run.update(energy_j=None, avg_power_w_counter=None, avg_power_w_sampled=None, energy_j_per_item=None)
        p.write_text(json.dumps(doc))
    model = PerformanceModel.from_profiles(paths)
    fit = model.fit("yolo:yolo11l")
    assert fit.power_source.startswith("family:yolo:")
    assert fit.latency_source == "whole-gpu+slope"
    assert model.busy_power_w("yolo:yolo11l", H100, 3, 8) > 0
    assert model.fit("yolo:yolo11x").power_source == "measured"


def test_profiler_output_with_mig_profile_field(tmp_path):
    doc = json.loads(profile_paths()[0].read_text())
    doc["info"].update(mps_active_thread_pct=None, mig_profile="3g.40gb")
    path = tmp_path / "h100_3g.json"
    path.write_text(json.dumps(doc))
    assert {p.sm_fraction for p in load_points([path])} == {60 / 132}


def test_bad_profile_files_say_what_and_where(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="bad.json: not valid JSON"):
        load_points([bad])
    doc = json.loads(profile_paths()[0].read_text())
    doc["info"]["gpu"] = "NVIDIA GeForce RTX 4090"
    other = tmp_path / "rtx.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="RTX 4090.*not in the GPU catalog"):
        load_points([other])
    fp16 = next(i for i, r in enumerate(doc["variants"]["yolo:yolo11n"]["runs"]) if r["dtype"] == "fp16")
    del doc["variants"]["yolo:yolo11n"]["runs"][fp16]["lat_ms_mean"]
    doc["info"]["gpu"] = "NVIDIA H100 80GB HBM3"
    other.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=rf"variants.yolo:yolo11n.runs\[{fp16}\].*lat_ms_mean"):
        load_points([other])
