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


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    Plain `yaml.safe_load` keeps the last of two equal keys without a word, so a service listed
    twice in a deployment file (or a GPU type in gpus.yaml) would silently lose its first entry."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {first + 1}); give each key once",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _field_path(loc: tuple[int | str, ...], raw: object) -> str:
    """`services.albert.rate_rps` for pydantic's loc `("services", 1, "rate_rps")`: a position in
    a list that the file wrote as a mapping (a model turned `{name: {...}}` into a list) is named
    by its key, as the user wrote it."""
    parts: list[str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and isinstance(part, int) and 0 <= part < len(node):
            part = list(node)[part]
        parts.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(parts) or "(top level)"


def validation_message(exc: ValidationError, where: str, raw: object) -> str:
    """One line per problem: `WHERE: field PATH: reason` (pydantic's "Value error, " prefix dropped)."""
    return "\n".join(f"{where}: field {_field_path(tuple(err['loc']), raw)}: {err['msg'].removeprefix('Value error, ')}"
                     for err in exc.errors())


def load_model(path: Path, model: type[M], context: dict[str, object] | None = None) -> M:
    """Read the YAML file at `path` and validate it as `model` (`context` goes to its validators);
    every error is a ConfigError naming the file, the field and the reason."""
    try:
        with path.open() as stream:  # a stream, so that YAML's error marks name the file
            raw = yaml.load(stream, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, str(path), raw)) from None


@lru_cache(maxsize=8)
def load_gpu_catalog(path: str | Path | None = None) -> GpuCatalog:
    """The GPU catalog (configs/gpus.yaml unless a path is given)."""
    return load_model(Path(path) if path else CONFIG_DIR / "gpus.yaml", GpuCatalog)


@lru_cache(maxsize=8)
def load_services(path: str | Path | None = None) -> ServiceCatalog:
    """The service catalog (configs/services.yaml unless a path is given)."""
    return load_model(Path(path) if path else CONFIG_DIR / "services.yaml", ServiceCatalog)


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
