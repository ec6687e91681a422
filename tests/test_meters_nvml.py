"""NVML meter against a stand-in pynvml (recorded H100 values) and the real pynvml without a GPU."""
from __future__ import annotations

import logging
import time

import pytest

from gpu_node.meters.nvml import NvmlMeter
from tests.fake_nvml import H100_POWER_MW, H100_UUID, FakeClock, FakeGpu, FakeNvml

W = H100_POWER_MW / 1000.0  # 74.892 W


def _meter(gpus: list[FakeGpu], **kw) -> tuple[NvmlMeter, FakeNvml, FakeClock]:
    clock = FakeClock()
    nv = FakeNvml(clock, gpus)
    return NvmlMeter(kw.pop("ids", [g.index for g in gpus]), nvml=nv, clock=clock,
                     sample_interval_s=None, **kw), nv, clock


def test_counter_window_reads_the_energy_counter():
    meter, nv, clock = _meter([FakeGpu(0, H100_UUID)])
    meter.begin_window("w")
    clock.advance(2.0)
    nv.set_power(0, 350_000)
    clock.advance(1.0)
    m = meter.end_window("w")
    assert meter.method("gpu0") == "counter"
    assert not m.estimated and m.notes == ()
    assert m.energy_j["gpu0"] == pytest.approx(2 * W + 350.0, abs=1e-3)
    assert m.duration_s == pytest.approx(3.0)


def test_window_shorter_than_counter_period_is_estimated_from_power():
    meter, _, clock = _meter([FakeGpu(0, H100_UUID)])
    meter.begin_window("short")
    clock.advance(0.04)
    m = meter.end_window("short")
    assert m.estimated
    assert "shorter than the energy counter's update period" in m.notes[0]
    assert m.energy_j["gpu0"] == pytest.approx(W * 0.04)  # not 0 J (the Zeus complaint)


def test_counter_going_backwards_falls_back_and_says_why():
    meter, nv, clock = _meter([FakeGpu(0, H100_UUID)])
    meter.begin_window("w")
    clock.advance(1.0)
    nv.reload_driver(0)
    clock.advance(1.0)
    m = meter.end_window("w")
    assert m.estimated and "went backwards" in m.notes[0]
    assert m.energy_j["gpu0"] == pytest.approx(2 * W)


def test_missing_counter_integrates_power_samples_without_estimate_flag():
    meter, nv, clock = _meter([FakeGpu(0, H100_UUID, has_counter=False)])
    assert meter.method("gpu0") == "power"
    meter.begin_window("w")
    clock.advance(1.0)
    m = meter.end_window("w")
    assert not m.estimated
    assert m.energy_j["gpu0"] == pytest.approx(W)


def test_gpu_lost_mid_window_gives_no_figure_and_a_reason():
    meter, nv, clock = _meter([FakeGpu(0, H100_UUID), FakeGpu(1, "GPU-other")])
    meter.begin_window("w")
    clock.advance(1.0)
    nv.gpus[1].lost = True
    m = meter.end_window("w")
    assert "gpu1" not in m.energy_j and m.energy_j["gpu0"] == pytest.approx(W, rel=1e-3)
    assert m.estimated and any("gpu1" in n for n in m.notes)


def test_mig_uuids_in_cuda_visible_devices_resolve_to_their_physical_gpu(monkeypatch):
    gpus = [FakeGpu(0, H100_UUID, migs=("MIG-aaaa", "MIG-bbbb")), FakeGpu(1, "GPU-2222", migs=("MIG-cccc",))]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aaaa,MIG-bbbb")
    meter, _, clock = _meter(gpus, ids=None)
    assert meter.devices() == ["gpu0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-cccc, 0")
    assert NvmlMeter(nvml=FakeNvml(clock, gpus), clock=clock).devices() == ["gpu1", "gpu0"]


def test_unresolvable_visible_device_meters_all_gpus_with_a_warning(monkeypatch, caplog):
    gpus = [FakeGpu(0, H100_UUID), FakeGpu(1, "GPU-2222")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-GPU-141b1e27/1/0")
    with caplog.at_level(logging.WARNING):
        meter, _, _ = _meter(gpus, ids=None)
    assert meter.devices() == ["gpu0", "gpu1"]
    assert "metering all GPUs" in caplog.text


def test_window_misuse_is_a_clear_error():
    meter, _, _ = _meter([FakeGpu(0, H100_UUID)])
    meter.begin_window("a")
    with pytest.raises(ValueError, match="already open"):
        meter.begin_window("a")
    with pytest.raises(ValueError, match="no open window 'b'"):
        meter.end_window("b")


def test_overlapping_windows_are_independent():
    meter, _, clock = _meter([FakeGpu(0, H100_UUID)])
    meter.begin_window("outer")
    clock.advance(1.0)
    meter.begin_window("inner")
    clock.advance(1.0)
    inner = meter.end_window("inner")
    outer = meter.end_window("outer")
    assert inner.energy_j["gpu0"] == pytest.approx(W, abs=1e-3)
    assert outer.energy_j["gpu0"] == pytest.approx(2 * W, abs=1e-3)


def test_background_sampler_integrates_changing_power_in_real_time():
    gpu = FakeGpu(0, H100_UUID, has_counter=False)
    nv = FakeNvml(FakeClock(), [gpu])
    meter = NvmlMeter([0], nvml=nv, sample_interval_s=0.01)  # real clock, real thread
    try:
        meter.begin_window("w")
        time.sleep(0.2)
        gpu.power_mw = 300_000
        time.sleep(0.2)
        m = meter.end_window("w")
    finally:
        meter.close()
    assert nv.shutdown_called
    expected = 0.2 * W + 0.2 * 300.0
    assert m.energy_j["gpu0"] == pytest.approx(expected, rel=0.2)


def test_no_driver_is_reported_once_and_every_measurement_is_estimated(caplog):
    """The real pynvml on this machine (no NVIDIA driver) raises NVMLError_LibraryNotFound."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present here")
    except pynvml.NVMLError:
        pass
    with caplog.at_level(logging.WARNING):
        meter = NvmlMeter()
        for name in ("a", "b"):
            meter.begin_window(name)
            m = meter.end_window(name)
            assert m.estimated and m.energy_j == {} and not m.available
            assert "NVML could not start" in m.notes[0]
    assert caplog.text.count("energy meter unavailable") == 1
    assert not meter.available and meter.devices() == []
