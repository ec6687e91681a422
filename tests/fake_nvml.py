"""A stand-in for the `pynvml` module, driven by a test clock (the GPU is outside this machine).

Starting values are the ones recorded on a real H100 SXM (tests/fixtures/nvidia-smi/
h100-sxm_mig-disabled.txt): energy counter 159873776 mJ, power 74892 mW. The energy counter
advances only every `period_s` (NVML documents 20-100 ms), like the real one. Errors are the
real pynvml exception classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pynvml

H100_ENERGY_MJ = 159_873_776
H100_POWER_MW = 74_892
H100_UUID = "GPU-141b1e27-9509-36f7-00c3-10e68a6753fa"


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@dataclass
class FakeGpu:
    index: int
    uuid: str
    power_mw: int = H100_POWER_MW
    energy_mj: float = H100_ENERGY_MJ  # counter value at `since`
    has_counter: bool = True
    migs: tuple[str, ...] = ()
    since: float = 0.0
    lost: bool = False


class FakeNvml:
    """Exposes the pynvml functions NvmlMeter calls, with the real error classes."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported

    def __init__(self, clock: FakeClock, gpus: list[FakeGpu], period_s: float = 0.1) -> None:
        self.clock = clock
        self.gpus = gpus
        self.period_s = period_s
        self.shutdown_called = False
        for g in gpus:
            g.since = clock()

    # power changes integrate into the counter from the moment they happen
    def set_power(self, index: int, mw: int) -> None:
        g = self.gpus[index]
        g.energy_mj += g.power_mw * (self.clock() - g.since)
        g.since, g.power_mw = self.clock(), mw

    def reload_driver(self, index: int) -> None:
        g = self.gpus[index]
        g.energy_mj, g.since = 0.0, self.clock()

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        if not 0 <= i < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[i]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu | tuple[str, FakeGpu]:
        for g in self.gpus:
            if g.uuid == uuid:
                return g
            if uuid in g.migs:
                return ("mig", g)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: tuple[str, FakeGpu]) -> FakeGpu:
        return h[1]

    def nvmlDeviceGetIndex(self, h: FakeGpu) -> int:
        return h.index

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        if not h.has_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if h.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        # the counter publishes only at multiples of period_s
        published = math.floor(round(self.clock() / self.period_s, 9)) * self.period_s
        return int(h.energy_mj + h.power_mw * max(0.0, published - h.since))

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        if h.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return h.power_mw
