"""Read and validate configuration files; errors name the file, the field and the reason."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from configs.schema import GpuCatalog, ServiceCatalog

CONFIG_DIR = Path(__file__).resolve().parent
TRACE_DIR = CONFIG_DIR / "traces"
PROFILE_DIR = CONFIG_DIR / "profiles"

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


def _load(path: Path, model: type[M]) -> M:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{path}: field {where}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


@lru_cache(maxsize=8)
def load_gpu_catalog(path: str | Path | None = None) -> GpuCatalog:
    """The GPU catalog (configs/gpus.yaml unless a path is given)."""
    return _load(Path(path) if path else CONFIG_DIR / "gpus.yaml", GpuCatalog)


@lru_cache(maxsize=8)
def load_services(path: str | Path | None = None) -> ServiceCatalog:
    """The service catalog (configs/services.yaml unless a path is given)."""
    return _load(Path(path) if path else CONFIG_DIR / "services.yaml", ServiceCatalog)


def profile_paths(gpu: str = "h100-sxm") -> list[Path]:
    """Bundled performance profiles of one GPU (`<gpu>_*.json` in configs/profiles).

    The default, the H100 SXM files, is what the performance model is fitted to; other GPUs'
    files (e.g. `h200_mps-*.json`, measured by `gpu-node profile --mps-percent`) sit beside
    them for comparison and are never mixed in (one fit is one GPU type)."""
    return sorted(PROFILE_DIR.glob(f"{gpu}_*.json"))


def trace_names() -> list[str]:
    return sorted(p.stem for p in TRACE_DIR.glob("*.csv"))


def resolve_trace(name_or_path: str | Path) -> Path:
    """A bundled trace name (`emaps_de_2023`) or a path to any CSV trace."""
    p = Path(name_or_path)
    if p.suffix == ".csv" and p.exists():
        return p
    bundled = TRACE_DIR / f"{p.stem if p.suffix == '.csv' else name_or_path}.csv"
    if bundled.exists():
        return bundled
    raise ConfigError(
        f"carbon trace {str(name_or_path)!r} not found: give a CSV path with header "
        f"'timestamp,carbon_intensity_gco2_per_kwh' or one of: {', '.join(trace_names())}"
    )


def trace_zone(name_or_path: str | Path) -> str | None:
    """The grid zone a trace says it covers (zones.yaml beside the CSV), None when it says nothing."""
    path = resolve_trace(name_or_path)
    zones_file = path.parent / "zones.yaml"
    if not zones_file.exists():
        return None
    try:
        zones = yaml.safe_load(zones_file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{zones_file}: not valid YAML: {exc}") from None
    if not isinstance(zones, dict):
        raise ConfigError(f"{zones_file}: expected a mapping trace name -> zone, got {type(zones).__name__}")
    zone = zones.get(path.stem)
    return None if zone is None else str(zone)
