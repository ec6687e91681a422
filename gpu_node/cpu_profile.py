"""This host's CPU as a serving device: its performance profile, measured once and cached.

Why: with `--execution real` on a machine without a GPU the replicas run the networks on this
CPU, so the planner must predict CPU latency and energy, not an H100's. The existing profiler
(gpu_node/profiler.py, what `gpu-node profile --device cpu` runs) measures the variants the
planner may use at the batch sizes it may choose, plus the service's base variant at batch 1
(the default SLA and the `base` counterfactual are priced from it), with the thread count the
replicas run with. The file goes to the user cache (`CLOVER_CACHE_DIR`, else ~/.cache/clover),
under `profiles/cpu-<service>-<cores>cores-torch<version>.json` — what changes CPU timings — and
its `request` block records what was measured: a start that asks for the same reuses the file,
one that asks for anything else (other variants, batches, threads or duration) measures again.

Power: RAPL where readable (the profiler's meter). Where it is not (containers; Linux ≥ 5.10
without root) the file gets estimated figures, flagged `info.energy_meter: "estimated"` with the
reason, from the catalog's nominal CPU fitted to these cores (configs/gpus.yaml `CPU`): idle
power all along, and while a batch runs the busy threads' share of the range up to the maximum.
Energy per request then still falls with the batch size, as on a measured CPU.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from configs import load_services
from configs.loader import load_gpu_catalog
from configs.schema import HOST_CPU, GpuType

log = logging.getLogger(__name__)

# Timed seconds per variant and batch at start-up, at least one pass: the small variants get
# dozens, the base variant (seconds per pass on a laptop CPU) one or two.
PROFILE_SECONDS = 1.0
WARMUP_MIN_S = 0.2  # a few passes even in a short profile: the first ones on a CPU are several times slower


@dataclass(frozen=True)
class CpuProfileRequest:
    """What the planner needs measured on this CPU."""

    service: str
    variants: tuple[str, ...]  # the variants the planner may use
    batches: tuple[int, ...]  # the batch sizes it may choose
    threads: int  # torch threads per replica
    duration_s: float = PROFILE_SECONDS

    def __post_init__(self) -> None:
        if not self.variants or not self.batches or self.threads < 1 or self.duration_s <= 0:
            raise ValueError(f"CPU profile request needs variants, batches, threads >= 1 and a duration > 0: {self}")

    def key(self) -> dict[str, Any]:
        """What a cached file must have been measured for to be reused (JSON types)."""
        return {**asdict(self), "variants": sorted(self.variants), "batches": sorted(self.batches)}


@dataclass(frozen=True)
class CpuProfile:
    path: Path
    reused: bool
    seconds: float  # spent measuring now (0 when reused)

    def describe(self) -> str:
        how = "cached, reused" if self.reused else f"measured at start-up in {self.seconds:.0f} s"
        return f"{self.path} ({how})"


def device_name() -> str:
    """The CPU as the run's records name it: `CPU (8 cores, x86_64)`."""
    from models.runner import available_cpus

    return f"{HOST_CPU} ({available_cpus()} cores, {platform.machine()})"


def cache_path(service: str) -> Path:
    import torch

    from models.build import cache_dir
    from models.runner import available_cpus

    return cache_dir() / "profiles" / f"cpu-{service}-{available_cpus()}cores-torch{torch.__version__}.json"


def with_power(doc: dict[str, Any], cpu: GpuType, why: str | None) -> dict[str, Any]:
    """The profile with this host's power figures (`info.idle_power_w`, `info.max_power_w`).

    Measured (RAPL: `why` is None) ones are kept, and the maximum is at least the highest power
    measured. Otherwise every run gets the estimate described in the module docstring, and
    `info` says it is one and why. Pure: returns a new document."""
    info = doc["info"]
    n = int(info.get("cpus_available") or 1)
    host = cpu.scaled_to(n)
    runs = [r for v in doc["variants"].values() for r in v.get("runs", [])]
    if why is None and info.get("idle_power_w") is not None:
        top = max([host.max_power_w, *(float(r["avg_power_w_counter"]) for r in runs
                                       if r.get("avg_power_w_counter") is not None)])
        return {**doc, "info": {**info, "max_power_w": round(top, 2)}}
    threads = min(int(info.get("cpu_threads") or n), n)
    busy_w = host.idle_power_w + (host.max_power_w - host.idle_power_w) * threads / n

    def estimated(run: dict[str, Any]) -> dict[str, Any]:
        energy = busy_w * float(run["wall_s"])
        return {**run, "energy_j": round(energy, 3), "avg_power_w_counter": round(busy_w, 2),
                "energy_j_per_item": round(energy / (int(run["iters"]) * int(run["batch"])), 5)}

    variants = {k: ({**v, "runs": [estimated(r) for r in v["runs"]]} if "runs" in v else v)
                for k, v in doc["variants"].items()}
    note = (f"estimated, not measured ({why or 'no energy meter'}): nominal CPU of configs/gpus.yaml for "
            f"{n} cores, {threads} busy thread(s)")
    return {**doc, "variants": variants,
            "info": {**info, "idle_power_w": host.idle_power_w, "max_power_w": host.max_power_w,
                     "energy_meter": "estimated", "energy_note": note}}


def measure(req: CpuProfileRequest) -> dict[str, Any]:
    """Run the profiler here: the planner's variants and batches, then the base variant at batch 1."""
    from gpu_node.host_cpu import rapl_unreadable
    from gpu_node.profiler import ProfileRequest, profile

    base = load_services().get(req.service).base.name

    def run(variants: tuple[str, ...], batches: tuple[int, ...]) -> dict[str, Any]:
        return profile(ProfileRequest(req.service, list(variants), batches, req.duration_s,
                                      warmup_s=min(1.0, max(WARMUP_MIN_S, req.duration_s)), device="cpu",
                                      threads=req.threads, min_iters=1))

    doc = run(req.variants, req.batches)
    if base not in req.variants:
        doc["variants"].update(run((base,), (1,))["variants"])
    failed = {k: v["error"] for k, v in doc["variants"].items() if "error" in v}
    if failed:
        raise RuntimeError(f"profiling {req.service} on this CPU failed for {failed}")
    return with_power(doc, load_gpu_catalog().get(HOST_CPU), rapl_unreadable())


def _cached(path: Path, req: CpuProfileRequest) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("request") == req.key()


def cpu_profile(req: CpuProfileRequest, *, path: Path | None = None,
                measure_fn: Callable[[CpuProfileRequest], dict[str, Any]] = measure) -> CpuProfile:
    """This CPU's profile for `req`: the cached file when it was measured for the same request,
    else measured now (takes seconds per variant and batch) and cached."""
    path = path or cache_path(req.service)
    if _cached(path, req):
        log.info("reusing the CPU profile %s (measured earlier for the same variants, batches and threads)", path)
        return CpuProfile(path, True, 0.0)
    log.info("profiling %s on this CPU (%s, batches %s, %d thread(s)); cached in %s", req.service,
             ", ".join(req.variants), req.batches, req.threads, path)
    t0 = time.perf_counter()
    doc = {**measure_fn(req), "request": req.key()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return CpuProfile(path, False, time.perf_counter() - t0)
