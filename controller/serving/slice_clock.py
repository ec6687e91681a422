"""The simulated slice's own clock: when each batch starts and ends on the simulated device.

Why a clock of its own instead of the host's: a simulated replica "runs" a batch by sleeping for
the performance model's service time. On a busy host (the 2-core demo machine runs the ingress,
the controller, the node agent and a dozen replicas) the replica's event loop wakes late, and
the late wake-up would be counted as time on the GPU, although a GPU does not slow down when its
host's CPUs are busy. The clock keeps the device's timeline as the greedy batcher and the
performance model define it: a batch starts when the device is free and its last request has
arrived, and ends one service time later. Host delays are not lost: they show in the ingress and
client latency, which are measured on the wall clock. Pure, no asyncio: tested directly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class SliceClock:
    """Device time of one simulated slice (seconds on the host's monotonic clock)."""

    free_at: float = float("-inf")  # when the device finishes its last batch

    def run(self, arrivals: Sequence[float], service_s: float) -> float:
        """Schedule one batch whose requests arrived at `arrivals`; return when it ends.

        The batch cannot start before its last request arrived (causality) nor before the device
        is free (one batch at a time), and never later than the host actually started it, so
        with an idle host the clock is the wall clock.
        """
        if not arrivals:
            raise ValueError("a batch holds at least one request")
        start = max(self.free_at, max(arrivals))
        self.free_at = start + service_s
        return self.free_at
