"""Energy meter over simulated GPUs (gpu_node/simulated_gpu.SimulatedGpu).

The simulated GPU exposes an NVML-like monotonic mJ counter, so this meter is the NVML
counter path without the driver: the demo and the tests exercise the same window logic and
accounting a real node uses.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from gpu_node.meters.base import WindowMeter, counter_delta


class EnergyCounter(Protocol):
    def total_energy_mj(self) -> int: ...


class SimulatedGpuMeter(WindowMeter):
    source = "simulated"

    def __init__(self, gpus: Mapping[str, EnergyCounter], clock: Callable[[], float] = time.monotonic) -> None:
        """`gpus`: device id (e.g. "gpu0") -> SimulatedGpu."""
        super().__init__(clock)
        self._gpus = dict(gpus)

    def devices(self) -> list[str]:
        return list(self._gpus)

    def _read(self) -> dict[str, int]:
        return {dev: gpu.total_energy_mj() for dev, gpu in self._gpus.items()}

    def _measure(self, start: dict[str, int], end: dict[str, int], duration_s: float
                 ) -> tuple[dict[str, float], list[str]]:
        energy: dict[str, float] = {}
        notes: list[str] = []
        for dev in self._gpus:
            delta = counter_delta(start[dev], end[dev], None)
            if delta is None:
                notes.append(f"{dev}: simulated energy counter went backwards (GPU object replaced?); no figure")
            else:
                energy[dev] = delta / 1000.0
        return energy, notes
