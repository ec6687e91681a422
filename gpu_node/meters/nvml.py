"""NVML energy meter: one reading per physical GPU (NVML cannot read a MIG slice).

Method per GPU, chosen at start:
- `counter`: `nvmlDeviceGetTotalEnergyConsumption` (mJ since driver load, Volta and newer).
  It advances only every 20-100 ms, so a window shorter than `counter_period_s`, a counter
  that did not move, or one that went backwards (driver reload) is answered from integrated
  power samples instead and the Measurement is marked estimated, with the reason.
- `power`: where the counter is NotSupported, `nvmlDeviceGetPowerUsage` (mW) samples are
  integrated (trapezoid) by a background thread every `sample_interval_s`. That is a
  measurement, not a guess, so it is not marked estimated (the choice is logged once).

`prefer="power"` forces integration on every GPU (the benchmark compares both methods).
Without an NVIDIA driver `nvmlInit` raises NVMLError_LibraryNotFound: the meter says so once
and every Measurement is estimated and empty; it never invents a number.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from gpu_node.meters.base import WindowMeter, counter_delta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    counter_mj: dict[str, float | None]  # None: not used or unreadable
    integrated_j: dict[str, float | None]  # None: power unreadable


class PowerIntegrator:
    """Cumulative energy per GPU from power samples (trapezoid rule), thread-safe."""

    def __init__(self, read_power_w: Callable[[str], float], devices: Sequence[str],
                 clock: Callable[[], float]) -> None:
        self._read = read_power_w
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, float]] = {}  # device -> (t, watts)
        self._energy: dict[str, float] = {d: 0.0 for d in devices}
        self._failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[str, float | None]:
        """Take one power sample per device and return the cumulative joules (None: unreadable)."""
        with self._lock:
            for dev in self._energy:
                if dev in self._failed:
                    continue
                try:
                    watts = self._read(dev)
                except Exception as exc:  # NVMLError subclasses; the GPU may have fallen off the bus
                    self._failed[dev] = str(exc)
                    log.warning("power reading of %s failed (%s); its energy is no longer measured", dev, exc)
                    continue
                now = self._clock()
                if dev in self._last:
                    t0, w0 = self._last[dev]
                    self._energy[dev] += 0.5 * (w0 + watts) * max(0.0, now - t0)
                self._last[dev] = (now, watts)
            return {d: (None if d in self._failed else e) for d, e in self._energy.items()}

    def start(self, interval_s: float) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.sample()

        self._thread = threading.Thread(target=loop, name="nvml-power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


class NvmlMeter(WindowMeter):
    source = "nvml"

    def __init__(
        self,
        gpus: Sequence[int | str] | None = None,
        *,
        nvml: ModuleType | Any | None = None,
        prefer: str = "counter",
        sample_interval_s: float | None = 0.05,
        counter_period_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`gpus`: NVML indices or GPU/MIG UUIDs; None = CUDA_VISIBLE_DEVICES if set, else all.

        `nvml` is the pynvml module (injectable so tests can stand in for the driver);
        `sample_interval_s=None` disables the background sampler (integration then uses
        the samples taken at window begin/end only).
        """
        super().__init__(clock)
        if prefer not in ("counter", "power"):
            raise ValueError(f"NvmlMeter: prefer must be 'counter' or 'power', got {prefer!r}")
        self._sample_interval_s = sample_interval_s
        self._counter_period_s = counter_period_s
        self._handles: dict[str, Any] = {}
        self._use_counter: dict[str, bool] = {}
        self._nvml = nvml
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                self._mark_unavailable("nvidia-ml-py (pynvml) is not installed: pip install nvidia-ml-py")
                return
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            self._mark_unavailable(
                f"NVML could not start ({exc}); is the NVIDIA driver installed and a GPU visible? "
                "(nvidia-smi must work on this machine)"
            )
            return
        self._handles = self._resolve(gpus)
        for dev, handle in self._handles.items():
            self._use_counter[dev] = prefer == "counter" and self._counter_supported(dev, handle)
        self._integrator = PowerIntegrator(self._power_w, list(self._handles), clock)

    # -- device discovery -------------------------------------------------------------
    def _resolve(self, gpus: Sequence[int | str] | None) -> dict[str, Any]:
        nv = self._nvml
        if gpus is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
            gpus = [g.strip() for g in visible.split(",") if g.strip()] if visible else None
        if gpus is None:
            return self._all_gpus()
        handles: dict[str, Any] = {}
        for entry in gpus:
            try:
                handle = self._physical_handle(entry)
            except (nv.NVMLError, ValueError) as exc:
                log.warning("cannot resolve GPU %r to a physical GPU (%s); metering all GPUs instead", entry, exc)
                return self._all_gpus()
            handles[f"gpu{nv.nvmlDeviceGetIndex(handle)}"] = handle
        return handles

    def _all_gpus(self) -> dict[str, Any]:
        nv = self._nvml
        return {f"gpu{i}": nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())}

    def _physical_handle(self, entry: int | str) -> Any:
        """A physical GPU handle for an index, a GPU UUID or a MIG device UUID (its parent GPU)."""
        nv = self._nvml
        text = str(entry)
        if text.isdigit():
            return nv.nvmlDeviceGetHandleByIndex(int(text))
        if text.startswith("MIG-"):
            mig = nv.nvmlDeviceGetHandleByUUID(text)
            return nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
        if text.startswith("GPU-"):
            return nv.nvmlDeviceGetHandleByUUID(text)
        raise ValueError(f"expected an index, GPU-<uuid> or MIG-<uuid>, got {text!r}")

    def _counter_supported(self, dev: str, handle: Any) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except self._nvml.NVMLError as exc:
            log.warning("%s has no readable energy counter (%s); integrating power samples instead", dev, exc)
            return False

    def devices(self) -> list[str]:
        return list(self._handles)

    def method(self, dev: str) -> str:
        """'counter' or 'power' for one GPU."""
        return "counter" if self._use_counter.get(dev) else "power"

    # -- readings ---------------------------------------------------------------------
    def _power_w(self, dev: str) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handles[dev]) / 1000.0

    def _counter_mj(self, dev: str) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[dev]))
        except self._nvml.NVMLError as exc:
            log.warning("energy counter of %s unreadable: %s", dev, exc)
            return None

    def begin_window(self, name: str) -> None:
        if self.available and self._sample_interval_s:
            self._integrator.start(self._sample_interval_s)
        super().begin_window(name)

    def _read(self) -> _Snapshot:
        counters = {d: (self._counter_mj(d) if self._use_counter[d] else None) for d in self._handles}
        return _Snapshot(counters, self._integrator.sample())

    def _measure(self, start: _Snapshot, end: _Snapshot, duration_s: float) -> tuple[dict[str, float], list[str]]:
        energy: dict[str, float] = {}
        notes: list[str] = []
        for dev in self._handles:
            integrated = None
            if start.integrated_j[dev] is not None and end.integrated_j[dev] is not None:
                integrated = end.integrated_j[dev] - start.integrated_j[dev]
            if not self._use_counter[dev]:
                if integrated is None:
                    notes.append(f"{dev}: power readings failed; no energy figure")
                else:
                    energy[dev] = integrated
                continue
            reason = self._counter_problem(start.counter_mj[dev], end.counter_mj[dev], duration_s)
            if reason is None:
                energy[dev] = counter_delta(start.counter_mj[dev], end.counter_mj[dev], None) / 1000.0
            elif integrated is not None:
                energy[dev] = integrated
                notes.append(f"{dev}: {reason}; used integrated power samples")
            else:
                notes.append(f"{dev}: {reason} and power readings failed; no energy figure")
        return energy, notes

    def _counter_problem(self, before: float | None, after: float | None, duration_s: float) -> str | None:
        if before is None or after is None:
            return "energy counter unreadable"
        if counter_delta(before, after, None) is None:
            return "energy counter went backwards (driver reloaded?)"
        if duration_s < self._counter_period_s:
            return (f"window of {duration_s * 1000:.0f} ms is shorter than the energy counter's "
                    f"update period ({self._counter_period_s * 1000:.0f} ms)")
        if after == before and duration_s > 0:
            return "energy counter did not advance"
        return None

    def close(self) -> None:
        super().close()
        if self._handles:
            self._integrator.stop()
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._handles = {}
