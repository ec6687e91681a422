"""Bundled configuration: GPU catalog, services, performance profiles, carbon traces.

`configs.schema` holds the pydantic models; `configs.loader` reads and validates the YAML
files. Import the loader functions from here.
"""
from configs.loader import (
    CONFIG_DIR,
    ConfigError,
    load_gpu_catalog,
    load_services,
    profile_paths,
    resolve_trace,
    trace_names,
    trace_zone,
)

__all__ = [
    "ConfigError",
    "CONFIG_DIR",
    "load_gpu_catalog",
    "load_services",
    "profile_paths",
    "resolve_trace",
    "trace_names",
    "trace_zone",
]
