"""Measure latency, throughput and energy of model variants on this machine's device.

Output has exactly the JSON shape of the bundled H100 profiles (configs/profiles, described in
docs/data.md), so `PerformanceModel.from_profiles` accepts it in their
place. Method, as for the bundled files: per (variant, dtype, batch) a warm-up, then a timed
window of back-to-back synchronous forward passes of the network alone on random inputs of the
production shape (pre/post-processing runs on the CPU beside the GPU and, with random weights,
NMS cost would be meaningless). Energy comes from the gpu_node.meters windows: NVML on CUDA
(counter, plus integrated 50 ms power samples for `avg_power_w_sampled`), RAPL on CPU where
readable; fields are null when no meter can read the hardware. On a MIG slice NVML still
reports the whole GPU's energy (it cannot meter a slice); `info.mig_profile` says which slice ran.
"""
from __future__ import annotations

import gc
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_node.meters import Measurement, Meter

log = logging.getLogger(__name__)

_MIG_LINE = re.compile(r"MIG\s+(\S+)\s+Device\s+\d+:\s+\(UUID:\s+(MIG-[^)\s]+)\)")
_MIG_IN_NAME = re.compile(r"MIG\s+(\d+g\.\d+gb\S*)")


@dataclass(frozen=True)
class ProfileRequest:
    service: str
    variants: list[str] | None = None  # None: all of the service's variants
    batches: tuple[int, ...] = (1, 4, 8)
    duration_s: float = 10.0
    warmup_s: float = 1.0
    device: str = "cpu"
    dtypes: tuple[str, ...] = ()  # empty: fp16 on CUDA, fp32 on CPU
    weights_dir: Path | None = None
    threads: int | None = None
    min_iters: int = 3


# ---------------------------------------------------------------------------------------
# pure helpers


def summarize_run(
    batch: int,
    dtype: str,
    latencies_s: list[float],
    wall_s: float,
    energy_j: float | None,
    sampled_energy_j: float | None,
    max_mem_gib: float | None,
) -> dict:
    """One `runs[]` entry in the bundled profiles' field order and rounding."""
    lat_ms = np.asarray(latencies_s) * 1000.0
    iters = len(lat_ms)
    items = iters * batch

    def r(x: float | None, nd: int) -> float | None:
        return None if x is None else round(float(x), nd)

    return {
        "batch": batch,
        "dtype": dtype,
        "iters": iters,
        "wall_s": r(wall_s, 4),
        "lat_ms_p50": r(np.percentile(lat_ms, 50), 3),
        "lat_ms_p99": r(np.percentile(lat_ms, 99), 3),
        "lat_ms_mean": r(lat_ms.mean(), 3),
        "items_per_s": r(items / wall_s, 2),
        "energy_j": r(energy_j, 3),
        "avg_power_w_counter": r(None if energy_j is None else energy_j / wall_s, 2),
        "avg_power_w_sampled": r(None if sampled_energy_j is None else sampled_energy_j / wall_s, 2),
        "energy_j_per_item": r(None if energy_j is None else energy_j / items, 5),
        "max_mem_gib": r(max_mem_gib, 3),
    }


def mig_profile_from_smi(text: str, uuid: str) -> str | None:
    """The MIG profile (`1g.10gb`) of device `uuid` in `nvidia-smi -L` output, if listed."""
    for profile, found in _MIG_LINE.findall(text):
        if found == uuid:
            return profile
    return None


def nvml_device(device: str, env: dict[str, str] | None = None) -> str:
    """The NVML identity (index, GPU-/MIG-UUID) of the CUDA device `device` ("cuda", "cuda:1").

    CUDA numbers the devices listed in CUDA_VISIBLE_DEVICES from 0, so `cuda:1` is its second
    entry; without the variable, CUDA and NVML indices agree (CUDA_DEVICE_ORDER=PCI_BUS_ID).
    """
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = [v.strip() for v in (env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES", "").split(",")
               if v.strip()]
    if not visible:
        return str(index)
    if index >= len(visible):
        raise ValueError(f"{device}: CUDA_VISIBLE_DEVICES lists only {len(visible)} device(s): {visible}")
    return visible[index]


def visible_mig_device(device: str = "cuda", env: dict[str, str] | None = None) -> str | None:
    """The MIG device UUID `device` runs on (through CUDA_VISIBLE_DEVICES), if any."""
    entry = nvml_device(device, env)
    return entry if entry.startswith("MIG-") else None


# ---------------------------------------------------------------------------------------
# adapters: meters and device facts


def _energy(m: Measurement | None) -> float | None:
    return m.total_j if m is not None and m.available else None


@dataclass
class EnergyMeters:
    """The counter meter (→ energy_j) and, on NVML, a power-sampling one (→ avg_power_w_sampled)."""

    counter: Meter | None
    sampled: Meter | None = None
    source: str | None = None

    @classmethod
    def for_device(cls, device: str) -> "EnergyMeters":
        if device.startswith("cuda"):
            from gpu_node.meters.nvml import NvmlMeter

            gpus = [nvml_device(device)]  # only the GPU this run uses, not every GPU of the node
            counter = NvmlMeter(gpus, prefer="counter")
            if not counter.available:
                return cls(None)
            return cls(counter, NvmlMeter(gpus, prefer="power"), "nvml")
        from gpu_node.meters.rapl import RaplMeter

        rapl = RaplMeter()
        return cls(rapl, None, "rapl") if rapl.available else cls(None)

    def begin(self, name: str) -> None:
        for meter in (self.counter, self.sampled):
            if meter is not None:
                meter.begin_window(name)

    def end(self, name: str) -> tuple[float | None, float | None]:
        def end_one(meter: Meter | None) -> float | None:
            return _energy(meter.end_window(name)) if meter is not None else None

        return end_one(self.counter), end_one(self.sampled)

    def close(self) -> None:
        for meter in (self.counter, self.sampled):
            if meter is not None:
                meter.close()


def _nvml_facts(device: str) -> dict:
    """Driver, power limit and MIG mode of the (parent) GPU this process uses; {} without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver / library: facts stay unknown
        log.info("NVML unavailable for device facts: %s", exc)
        return {}
    try:
        facts: dict = {"driver": pynvml.nvmlSystemGetDriverVersion()}
        entry = nvml_device(device)
        if entry.startswith("MIG-"):
            mig_handle = pynvml.nvmlDeviceGetHandleByUUID(entry)
            handle = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig_handle)
            match = _MIG_IN_NAME.search(str(pynvml.nvmlDeviceGetName(mig_handle)))
            if match:
                facts["mig_profile"] = match.group(1)
        elif entry.startswith("GPU-"):
            handle = pynvml.nvmlDeviceGetHandleByUUID(entry)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(entry))
        facts["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        try:
            facts["mig_mode"] = list(pynvml.nvmlDeviceGetMigMode(handle))
        except pynvml.NVMLError:  # GPU without MIG support
            facts["mig_mode"] = None
        return facts
    except pynvml.NVMLError as exc:
        log.warning("could not read GPU facts through NVML: %s", exc)
        return {}
    finally:
        pynvml.nvmlShutdown()


def _mig_profile_via_smi(uuid: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("nvidia-smi -L failed (%s); MIG profile unknown", exc)
        return None
    return mig_profile_from_smi(out, uuid)


def cpu_name() -> str:
    """The CPU's model name (`/proc/cpuinfo`), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str, meters: EnergyMeters, idle_s: float) -> dict:
    """`info` block: the bundled files' keys first, then what this profiler adds."""
    import torch

    cuda = device.startswith("cuda")
    facts = _nvml_facts(device) if cuda else {}
    mig = visible_mig_device(device) if cuda else None
    if mig and "mig_profile" not in facts:
        facts["mig_profile"] = _mig_profile_via_smi(mig)
    idle_w = None
    if meters.counter is not None and idle_s > 0:
        meters.begin("idle")
        time.sleep(idle_s)
        energy, _ = meters.end("idle")
        idle_w = None if energy is None else round(energy / idle_s, 2)
    from models.runner import available_cpus

    return {
        "gpu": torch.cuda.get_device_name(torch.device(device)) if cuda else cpu_name(),
        "driver": facts.get("driver"),
        "power_limit_w": facts.get("power_limit_w"),
        "torch": torch.__version__,
        "mps_active_thread_pct": os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"),
        "mig_mode": facts.get("mig_mode"),
        "idle_power_w": idle_w,
        "device": "cuda" if cuda else "cpu",
        "mig_device": mig,
        "mig_profile": facts.get("mig_profile"),
        "cpu_threads": None if cuda else torch.get_num_threads(),
        "cpus_available": available_cpus(),
        "energy_meter": meters.source,
    }


# ---------------------------------------------------------------------------------------
# measurement


def time_batch(runner, batch: int, req: ProfileRequest, meters: EnergyMeters) -> dict:
    """Warm up, then time back-to-back forward passes for `req.duration_s` (at least min_iters)."""
    import torch

    inputs = runner.synthetic_inputs(batch)
    warm_until = time.perf_counter() + req.warmup_s
    while True:  # at least one pass: lazy init and autotuning must not land in the timed window
        runner.forward(inputs)
        runner.synchronize()
        if time.perf_counter() >= warm_until:
            break
    cuda = runner.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(runner.device)
    latencies: list[float] = []
    meters.begin("run")
    start = time.perf_counter()
    while len(latencies) < req.min_iters or time.perf_counter() - start < req.duration_s:
        t0 = time.perf_counter()
        runner.forward(inputs)
        runner.synchronize()
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    energy, sampled = meters.end("run")
    mem = torch.cuda.max_memory_allocated(runner.device) / 2**30 if cuda else None
    return summarize_run(batch, runner.dtype_name, latencies, wall, energy, sampled, mem)


def selected_specs(req: ProfileRequest) -> list:
    """The variant specs to profile, in config order; unknown names are an error naming the known ones."""
    from models.registry import service_specs

    specs = service_specs(req.service)
    if req.variants:
        known = {s.name for s in specs}
        unknown = [v for v in req.variants if v not in known]
        if unknown:
            raise KeyError(f"unknown variants {unknown} of service {req.service!r}; known: {sorted(known)}")
        specs = [s for s in specs if s.name in req.variants]
    return specs


def request_dtypes(req: ProfileRequest) -> tuple[str, ...]:
    return req.dtypes or (("fp16",) if req.device.startswith("cuda") else ("fp32",))


def profile(req: ProfileRequest, on_step: Callable[[str, int], None] = lambda _d, _n: None) -> dict:
    """Profile the requested variants; `on_step(description, steps_done)` reports progress."""
    import torch

    from models.runner import ModelRunner, configure_cpu_threads

    specs = selected_specs(req)
    dtypes = request_dtypes(req)
    if not req.device.startswith("cuda"):
        configure_cpu_threads(req.threads)  # before `info` records the thread count
    meters = EnergyMeters.for_device(req.device)
    try:
        result = {"info": device_info(req.device, meters, idle_s=min(1.0, req.duration_s)), "variants": {}}
        for spec in specs:
            entry: dict = {}
            for n, dtype in enumerate(dtypes):
                try:
                    runner = ModelRunner(req.service, spec.name, device=req.device, weights_dir=req.weights_dir,
                                         threads=req.threads, dtype=dtype)
                except Exception as exc:  # record and go on, as the bundled files do
                    log.error("%s: build failed: %s", spec.profile_key, exc)
                    entry = {"error": f"{type(exc).__name__}: {exc}"}
                    on_step(f"{spec.profile_key} failed", (len(dtypes) - n) * len(req.batches))
                    break
                entry.setdefault("params", runner.built.params)
                entry.setdefault("build_s", round(runner.built.build_s, 2))
                for batch in req.batches:
                    entry.setdefault("runs", []).append(time_batch(runner, batch, req, meters))
                    on_step(f"{spec.profile_key} {dtype} batch {batch}", 1)
                del runner
                gc.collect()
                if req.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            result["variants"][spec.profile_key] = entry
        return result
    finally:
        meters.close()
