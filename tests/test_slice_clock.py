"""The simulated slice's clock: greedy batches on the device's own timeline, host delays left out."""
import pytest

from controller.serving.slice_clock import SliceClock


def test_idle_device_starts_a_batch_when_its_last_request_arrives() -> None:
    clock = SliceClock()
    assert clock.run([10.0, 10.002], 0.020) == pytest.approx(10.022)


def test_a_busy_device_queues_the_next_batch_behind_the_running_one() -> None:
    clock = SliceClock()
    first = clock.run([0.0], 0.030)
    # arrived while the first batch ran: starts when the device is free, not when the host woke up
    assert clock.run([0.010, 0.012], 0.040) == pytest.approx(first + 0.040)


def test_a_late_host_wake_up_is_not_time_on_the_device() -> None:
    """A batch the host starts 50 ms late (CPU contention) still ends one service time after
    its request arrived on an idle device: the lateness belongs to the host, not the GPU."""
    clock = SliceClock()
    clock.run([0.0], 0.010)
    assert clock.run([1.0], 0.010) == pytest.approx(1.010)


def test_matches_the_planners_request_simulation() -> None:
    """The same arrivals through the clock (batches as the greedy batcher forms them on an idle
    host) and through the replay's FIFO model give the same latencies."""
    import numpy as np

    from controller.planning.request_sim import serve_replica

    arrivals = np.array([0.0, 0.001, 0.005, 0.040, 0.041, 0.042, 0.043, 0.100])
    service_ms = np.array([10.0, 14.0, 18.0])  # S(1..3)
    expected, _ = serve_replica(arrivals * 1000.0, service_ms, np.zeros(3))
    clock, got, i = SliceClock(), [], 0
    while i < len(arrivals):  # greedy: everything waiting when the device frees up, at most B
        start = max(clock.free_at, arrivals[i])
        j = min(max(int(np.searchsorted(arrivals, start, side="right")), i + 1), i + 3)
        end = clock.run(list(arrivals[i:j]), service_ms[j - i - 1] / 1000.0)
        got += [(end - a) * 1000.0 for a in arrivals[i:j]]
        i = j
    assert got == pytest.approx(list(expected))


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError):
        SliceClock().run([], 0.01)
