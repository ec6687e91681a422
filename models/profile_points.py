"""Read measured profile JSON files into flat, validated points (the only I/O of the model).

The JSON shape is the one of configs/profiles (see docs/data.md) and of
`gpu-node profile` output:

    {"info": {"gpu": ..., "idle_power_w": ..., "mps_active_thread_pct": "12" | null,
              optional "sm_fraction": 0.12, optional "mig_profile": "1g.10gb"},
     "variants": {"yolo:yolo11n": {"params": int, "runs": [{batch, dtype, lat_ms_mean,
                  lat_ms_p50, lat_ms_p99, avg_power_w_counter, energy_j, wall_s,
                  max_mem_gib, ...}]} | {"error": "..."}}}

Each run becomes one `ProfilePoint` at the SM fraction the file was measured at. Energy
fields may be null (a profiler without a power meter): the point then has
`dynamic_power_w=None` and the model falls back to an estimate (docs/performance-model.md).

A CPU profile (`info.device == "cpu"`, `gpu-node profile --device cpu`) is the catalog's host
CPU (`configs.schema.HOST_CPU`) at its serving dtype, fp32; `profile_catalog` fits that
catalog entry to the cores and power figures the file records.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.loader import load_gpu_catalog
from configs.schema import HOST_CPU, GpuCatalog

SERVING_DTYPE = "fp16"
CPU_SERVING_DTYPE = "fp32"  # what models.runner runs on a CPU


class ProfileError(ValueError):
    """A profile file is missing, malformed, or inconsistent with the others."""


@dataclass(frozen=True)
class ProfilePoint:
    """One measured (variant, SM fraction, batch) run, fp16."""

    variant: str
    gpu_type: str
    sm_fraction: float
    batch: int
    lat_mean_ms: float
    lat_p50_ms: float
    lat_p99_ms: float
    dynamic_power_w: float | None  # average power above the file's idle power; None if not metered
    mem_gib: float
    params: int | None
    source: str


def gpu_type_of(product_name: str, catalog: GpuCatalog) -> str:
    """Catalog key of an NVML product name (`NVIDIA H100 80GB HBM3` -> `H100-80GB`).

    Prefix match, because NVML appends suffixes such as `MIG 1g.10gb` on some drivers.
    """
    for key, gt in catalog.gpu_types.items():
        if product_name == key or any(product_name.startswith(p) for p in gt.product_names):
            return key
    known = "; ".join(f"{k}: {list(gt.product_names)}" for k, gt in catalog.gpu_types.items())
    raise ProfileError(
        f"GPU {product_name!r} is not in the GPU catalog (configs/gpus.yaml); add its product "
        f"name to a gpu type's product_names. Known: {known}"
    )


def _sm_fraction(info: dict[str, Any], gpu_type: str, catalog: GpuCatalog, where: str) -> float:
    """SM share the file was measured with: explicit `sm_fraction`, a MIG profile, an MPS limit, or 1."""
    if info.get("sm_fraction") is not None:
        frac = float(info["sm_fraction"])
    elif info.get("mig_profile"):
        gt = catalog.get(gpu_type)
        frac = gt.profile(str(info["mig_profile"])).sms / gt.total_sms
    elif info.get("mps_active_thread_pct") not in (None, ""):
        frac = float(info["mps_active_thread_pct"]) / 100.0
    else:
        frac = 1.0
    if not 0.0 < frac <= 1.0:
        raise ProfileError(f"{where}: info: SM fraction {frac} is not in (0, 1]")
    return frac


def _dynamic_power(run: dict[str, Any], idle_w: float | None) -> float | None:
    if idle_w is None:
        return None
    for field in ("avg_power_w_counter", "avg_power_w_sampled"):
        if run.get(field) is not None:
            return max(0.0, float(run[field]) - idle_w)
    if run.get("energy_j") is not None and run.get("wall_s"):
        return max(0.0, float(run["energy_j"]) / float(run["wall_s"]) - idle_w)
    return None


def read_profile(path: Path) -> dict[str, Any]:
    """A profile file's document, checked for its two top-level objects."""
    where = str(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{where}: profile file not found") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("info"), dict) or not isinstance(doc.get("variants"), dict):
        raise ProfileError(f"{where}: expected an object with 'info' and 'variants' objects")
    return doc


def is_cpu_profile(info: dict[str, Any]) -> bool:
    return info.get("device") == "cpu"


def profile_catalog(paths: Iterable[str | Path], catalog: GpuCatalog | None = None) -> GpuCatalog:
    """The catalog to predict with for these profiles: as it is, or — for a CPU profile — with the
    host CPU entry fitted to the cores (`cpus_available`) and power figures (`idle_power_w`,
    `max_power_w`, measured or estimated: gpu_node/cpu_profile.py) the file records."""
    catalog = catalog or load_gpu_catalog()
    first = next(iter(paths), None)
    info = read_profile(Path(first))["info"] if first is not None else {}
    if not is_cpu_profile(info):
        return catalog
    cores = int(info.get("cpus_available") or info.get("cpu_threads") or 1)

    def watts(key: str) -> float | None:
        return None if info.get(key) is None else float(info[key])

    return catalog.with_type(catalog.get(HOST_CPU).scaled_to(cores, watts("idle_power_w"), watts("max_power_w")))


def _points_of_file(path: Path, catalog: GpuCatalog) -> list[ProfilePoint]:
    where = str(path)
    doc = read_profile(path)
    info = doc["info"]
    cpu = is_cpu_profile(info)
    gpu_type = HOST_CPU if cpu else gpu_type_of(str(info.get("gpu", "")), catalog)
    dtype = CPU_SERVING_DTYPE if cpu else SERVING_DTYPE
    frac = _sm_fraction(info, gpu_type, catalog, where)
    idle = info.get("idle_power_w")
    idle_w = float(idle) if idle is not None else None
    points = []
    for key, var in doc["variants"].items():
        if "error" in var:
            continue  # the variant failed to build on the profiling machine
        for i, run in enumerate(var.get("runs", [])):
            if run.get("dtype") != dtype:
                continue
            try:
                points.append(ProfilePoint(
                    variant=key, gpu_type=gpu_type, sm_fraction=frac, batch=int(run["batch"]),
                    lat_mean_ms=float(run["lat_ms_mean"]), lat_p50_ms=float(run["lat_ms_p50"]),
                    lat_p99_ms=float(run["lat_ms_p99"]),
                    dynamic_power_w=_dynamic_power(run, idle_w),
                    mem_gib=float(run.get("max_mem_gib") or 0.0),
                    params=var.get("params"), source=path.name,
                ))
            except (KeyError, TypeError, ValueError) as exc:
                raise ProfileError(f"{where}: variants.{key}.runs[{i}]: bad or missing field: {exc}") from None
    return points


def load_points(paths: Iterable[str | Path], catalog: GpuCatalog | None = None) -> list[ProfilePoint]:
    """All serving-dtype points (fp16; fp32 on a CPU) of the given profile files; they must all come
    from one GPU type."""
    catalog = catalog or load_gpu_catalog()
    points = [p for path in paths for p in _points_of_file(Path(path), catalog)]
    if not points:
        raise ProfileError("no runs at the serving dtype (fp16 on a GPU, fp32 on a CPU) in the given profile files")
    types = {p.gpu_type for p in points}
    if len(types) > 1:
        raise ProfileError(f"profile files mix GPU types {sorted(types)}; fit one GPU type at a time")
    return points
