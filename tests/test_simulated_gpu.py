"""SimulatedGpu: the NVML-like counter integrates idle + busy power exactly (fake clock)."""
from __future__ import annotations

import threading

import pytest

from gpu_node.simulated_gpu import SimulatedGpu
from models.performance import PerformanceModel

GPU = "H100-80GB"
SMALL, BIG = "yolo:yolo11n", "albert:xxlarge"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture(scope="module")
def perf() -> PerformanceModel:
    return PerformanceModel.default()


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


def test_idle_energy_is_idle_power_times_elapsed(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    assert gpu.total_energy_mj() == 0
    clock.advance(10.0)
    assert gpu.total_energy_mj() == pytest.approx(74.5 * 10.0 * 1000, abs=1)
    assert gpu.power_mw() == 74_500


def test_one_batch_adds_busy_power_times_latency(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    service = gpu.execute(1, BIG, 8, slice_id="s0")
    expected_s = perf.batch_latency_ms(BIG, GPU, 1, 8) / 1000
    assert service == pytest.approx(expected_s)
    dyn = perf.busy_power_w(BIG, GPU, 1, 8)
    assert gpu.power_mw() == int((74.5 + dyn) * 1000)
    clock.advance(5.0)
    assert gpu.power_mw() == 74_500
    assert gpu.total_energy_mj() / 1000 == pytest.approx(74.5 * 5.0 + dyn * expected_s, abs=2e-3)
    assert gpu.busy_seconds("s0") == pytest.approx(expected_s)


def test_concurrent_slices_add_and_same_slice_queues(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    lat = perf.batch_latency_ms(SMALL, GPU, 1, 4) / 1000
    dyn = perf.busy_power_w(SMALL, GPU, 1, 4)
    assert gpu.execute(1, SMALL, 4, slice_id="a") == pytest.approx(lat)
    assert gpu.execute(1, SMALL, 4, slice_id="b") == pytest.approx(lat)
    assert gpu.power_mw() == int((74.5 + 2 * dyn) * 1000)
    # a second batch on a busy slice waits for the first one
    assert gpu.execute(1, SMALL, 4, slice_id="a") == pytest.approx(2 * lat)
    clock.advance(10.0)
    assert gpu.busy_seconds("a") == pytest.approx(2 * lat)
    assert gpu.busy_seconds("b") == pytest.approx(lat)
    assert gpu.busy_seconds("never-used") == 0.0
    assert gpu.total_energy_mj() / 1000 == pytest.approx(74.5 * 10.0 + 3 * dyn * lat, abs=2e-3)


def test_busy_time_counts_only_the_elapsed_part(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    lat = gpu.execute(1, BIG, 8, slice_id=0)
    clock.advance(lat / 2)
    assert gpu.busy_seconds(0) == pytest.approx(lat / 2)
    assert gpu.total_energy_mj() / 1000 == pytest.approx((74.5 + perf.busy_power_w(BIG, GPU, 1, 8)) * lat / 2, abs=2e-3)


def test_power_is_capped_at_the_power_limit(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    lat = min(gpu.execute(1, BIG, 32, slice_id=i) for i in range(7))
    assert 7 * perf.busy_power_w(BIG, GPU, 1, 32) + 74.5 > 700  # the uncapped sum would exceed it
    assert gpu.power_mw() == 700_000
    clock.advance(lat)
    assert gpu.total_energy_mj() == pytest.approx(700 * lat * 1000, abs=2)


def test_counter_monotonic_even_if_clock_steps_back(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    readings = []
    for step in [0.5, 0.01, -0.3, 2.0, 0.0, 1.0]:
        gpu.execute(2, SMALL, 8, slice_id="x")
        clock.advance(step)
        readings.append(gpu.total_energy_mj())
    assert readings == sorted(readings)
    assert readings[-1] > readings[0]


def test_thread_safe_execute(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    lat = perf.batch_latency_ms(SMALL, GPU, 7, 1) / 1000

    def work() -> None:
        for _ in range(200):
            gpu.execute(7, SMALL, 1, slice_id="whole")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clock.advance(1000 * lat)
    assert gpu.busy_seconds("whole") == pytest.approx(800 * lat)


def test_bad_requests_are_rejected(perf, clock):
    gpu = SimulatedGpu(GPU, perf, clock=clock)
    with pytest.raises(KeyError, match="known: .*yolo:yolo11n"):
        gpu.execute(1, "yolo:nope", 1)
    with pytest.raises(ValueError, match="compute_slices=5"):
        gpu.execute(5, SMALL, 1)
    assert gpu.uuid.startswith("GPU-")
