"""The host CPU as a node's one device: its partition backend, energy meter and busy-time recorder.

A node built with `AgentConfig(device="cpu")` serves on this machine's CPU (`controller demo
--execution real` without a GPU). It has one device, catalog type `CPU`, that is never cut: its
one slice is the whole CPU (`7g.whole`), kept as bookkeeping exactly like an MPS share
(mig/mps.py) — nothing on the device changes when the slice is created or destroyed, and a live
lease still protects it — and a process on it sees no GPU.

Energy: RAPL (package and DRAM zones of every socket, what the profiler measures a CPU profile
with), summed into the device's one figure. Where RAPL cannot be read (containers; Linux ≥ 5.10
without root) the energy is modelled from the CPU profile's power figures: idle power all along,
plus each batch's measured seconds at its variant's busy power — and every measurement says so
(`estimated`, with the reason), as the meters' honesty rule asks (gpu_node/meters/base.py).
"""
from __future__ import annotations

import functools
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

from configs.schema import HOST_CPU
from gpu_node.devices import BusyRecorder, MeasuredBusy
from gpu_node.meters.base import Meter
from gpu_node.meters.rapl import DEFAULT_ROOT, RaplMeter
from gpu_node.meters.simulated import SimulatedGpuMeter
from gpu_node.profiler import cpu_name
from mig.mps import MpsBackend, SimulatedDaemon
from mig.simulated import SliceUsers, no_users
from mig.types import GpuInfo, GpuInstance
from models.protocol import PerfModel

CPU_STATE_FILE = "cpu-state.json"  # the slice book, in the node's state directory
DEVICE = "gpu0"  # the meter's device key: the agent reports energy per "gpu<index>"


def host_cpu_info() -> GpuInfo:
    return GpuInfo(0, f"CPU-{platform.node()}", cpu_name(), HOST_CPU, True, "none")


class HostCpuBackend(MpsBackend):
    """The CPU's one whole-device slice, booked like an MPS share (there is no daemon to wait for)."""

    partitioning = "none"

    def __init__(self, state_file: Path | str | None = None, *, users: SliceUsers = no_users) -> None:
        super().__init__(lambda: [host_cpu_info()], SimulatedDaemon(), state_file, users=users)

    def list_gpus(self) -> list[GpuInfo]:
        return list(self._gpus())

    def slice_env(self, gpu: GpuInfo, inst: GpuInstance) -> dict[str, str]:
        """No GPU at all: a replica on the CPU must not pick one up on a machine that has one."""
        return {"CUDA_VISIBLE_DEVICES": ""}


class CpuPackageMeter(RaplMeter):
    """RAPL's zones summed into the node's one device."""

    def devices(self) -> list[str]:
        return [DEVICE]

    def _measure(self, start: dict[str, float], end: dict[str, float], duration_s: float
                 ) -> tuple[dict[str, float], list[str]]:
        energy, notes = super()._measure(start, end, duration_s)
        return ({DEVICE: sum(energy.values())} if energy else {}), notes


class ModelledEnergy:
    """A monotonic energy counter (mJ, like NVML's) for a CPU whose meter cannot be read: idle
    power since creation plus each batch's measured seconds at its variant's busy power."""

    def __init__(self, perf: PerfModel, clock: Callable[[], float] = time.monotonic) -> None:
        self.perf = perf
        self._idle_w = perf.idle_power_w(HOST_CPU)
        self._clock = clock
        self._t0 = clock()
        self._busy_j = 0.0
        self._lock = threading.Lock()

    def add_batch(self, variant_key: str, compute_slices: int, batch: int, seconds: float) -> None:
        watts = self.perf.busy_power_w(variant_key, HOST_CPU, compute_slices, batch)
        with self._lock:
            self._busy_j += watts * seconds

    def total_energy_mj(self) -> int:
        with self._lock:
            return int(((self._clock() - self._t0) * self._idle_w + self._busy_j) * 1000.0)


class ModelledMeter(SimulatedGpuMeter):
    """Windows over a `ModelledEnergy` counter; every measurement is estimated and says why."""

    source = "modelled"

    def __init__(self, energy: ModelledEnergy, why: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__({DEVICE: energy}, clock)
        self.why = why

    def _measure(self, start: dict[str, int], end: dict[str, int], duration_s: float
                 ) -> tuple[dict[str, float], list[str]]:
        energy, notes = super()._measure(start, end, duration_s)
        return energy, [*notes, self.why]


class CpuBusy(MeasuredBusy):
    """Measured busy seconds per slice; with a modelled counter, each batch's seconds are also
    charged at its variant's busy power. The variant and batch size come from `record_batch` (at
    the batch's start), the seconds from `record_busy` (at its end); a slice runs one batch at a
    time, so the last batch started on a slice is the one that ended."""

    def __init__(self, energy: ModelledEnergy | None = None) -> None:
        super().__init__()
        self._energy = energy
        self._started: dict[tuple[int, str], tuple[str, int, int]] = {}

    def record_batch(self, gpu: int, compute_slices: int, variant_key: str, batch: int, slice_id: str) -> float:
        self._started[(gpu, slice_id)] = (variant_key, compute_slices, batch)
        return 0.0

    def record_busy(self, gpu: int, slice_id: str, seconds: float) -> None:
        super().record_busy(gpu, slice_id, seconds)
        started = self._started.get((gpu, slice_id))
        if self._energy is not None and started is not None:
            self._energy.add_batch(*started, seconds)


@functools.cache
def rapl_unreadable(root: str | Path = DEFAULT_ROOT) -> str | None:
    """Why RAPL cannot be read here, or None when it can (checked once per process)."""
    return RaplMeter(root).unavailable_reason


def meter_description(root: str | Path = DEFAULT_ROOT) -> str:
    """How a CPU node meters its energy, as the run's records say it."""
    return "RAPL" if rapl_unreadable(root) is None else "RAPL (estimated: not readable)"


def cpu_meters(perf: Callable[[], PerfModel], root: str | Path = DEFAULT_ROOT) -> tuple[Meter, BusyRecorder]:
    """RAPL where readable, else energy modelled from the CPU profile (`perf()` builds its model)."""
    rapl = CpuPackageMeter(root)
    if rapl.available:
        return rapl, CpuBusy()
    energy = ModelledEnergy(perf())
    why = f"RAPL not readable ({rapl.unavailable_reason}); energy modelled from the CPU profile's power figures"
    return ModelledMeter(energy, why), CpuBusy(energy)
