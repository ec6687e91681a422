"""A deployment: which services Clover serves side by side, and how (`controller --config FILE`).

`DeploymentConfig` is the one description of a deployment, whether it comes from a YAML file
(`load_deployment`), from per-service flags or from both (configs/deployment_flags.py; flags
override the file). Pure pydantic models: service names and variants are checked against the
service catalog passed in the validation context as `catalog` (default: configs/services.yaml),
so a typo fails when the file is read, not minutes later when the planner first runs. The file
format, with an example, is in docs/configuration.md and configs/clover.example.yaml.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from configs.loader import CONFIG_DIR, load_model, load_services
from configs.per_service import unknown_service_text
from configs.schema import ServiceCatalog

DEFAULT_RATE_RPS = 20.0
EXAMPLE_FILE = CONFIG_DIR / "clover.example.yaml"


def _catalog(info: ValidationInfo) -> ServiceCatalog:
    return (info.context or {}).get("catalog") or load_services()


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt key is an error, not ignored


class ServiceSpec(_Frozen):
    """One served service: its expected load, SLA, carbon weight and the variants it may use."""

    name: str
    rate_rps: float = Field(DEFAULT_RATE_RPS, gt=0, allow_inf_nan=False)  # capacity is never planned below it
    sla_ms: float | None = Field(None, gt=0, allow_inf_nan=False)  # None: Base's p95 (Clover's SLA)
    lam: float | None = Field(None, ge=0, le=1)  # None: the deployment's λ
    variants: tuple[str, ...] | None = Field(None, min_length=1)  # None: every variant of the service
    min_accuracy: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)  # hard floor, the service's metric
    rate_trace: str | None = None  # CSV `t_s,rate_rps`: the service's load over time

    @field_validator("name")
    @classmethod
    def _configured(cls, name: str, info: ValidationInfo) -> str:
        known = _catalog(info).services
        if name not in known:
            raise ValueError(unknown_service_text(name, known))
        return name

    @field_validator("variants")
    @classmethod
    def _variants_of_the_service(cls, variants: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        if variants is None or "name" not in info.data:  # a bad name has its own error
            return variants
        service = _catalog(info).get(info.data["name"])
        known = [v.name for v in service.variants]
        unknown = [v for v in variants if v not in known]
        if unknown:
            are = "is not a variant" if len(unknown) == 1 else "are not variants"
            raise ValueError(f"{', '.join(map(repr, unknown))} {are} of {service.name!r}; known: {', '.join(known)}")
        twice = sorted({v for v in variants if variants.count(v) > 1})
        if twice:
            raise ValueError(f"variant {', '.join(map(repr, twice))} listed twice; list each variant once")
        return variants

    @field_validator("min_accuracy")
    @classmethod
    def _reachable(cls, floor: float | None, info: ValidationInfo) -> float | None:
        if floor is None or "name" not in info.data or "variants" not in info.data:
            return floor
        service = _catalog(info).get(info.data["name"])
        allowed = [service.variant(v) for v in info.data["variants"] or [v.name for v in service.variants]]
        best = max(allowed, key=lambda v: v.accuracy)
        if floor > best.accuracy:
            raise ValueError(f"min_accuracy {floor:g} is above every allowed variant of {service.name!r}: the most "
                             f"accurate, {best.name}, has {best.accuracy:g} ({service.metric}); lower the floor "
                             "or allow a more accurate variant")
        return floor

    @field_validator("rate_trace")
    @classmethod
    def _trace_file(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is None:
            return None
        resolved = Path(path).expanduser()
        base_dir = (info.context or {}).get("base_dir")
        if not resolved.is_absolute() and base_dir is not None:
            resolved = Path(base_dir) / resolved
        if not resolved.is_file():
            raise ValueError(f"rate trace {str(resolved)!r} is not a file: give a CSV with header 't_s,rate_rps' "
                             "(a relative path is relative to the deployment file's folder)")
        return str(resolved)


class DeploymentConfig(_Frozen):
    """The services served side by side and the settings of the deployment as a whole.

    The defaults are `controller run`'s; every field but `services` may be left out of a file."""

    services: tuple[ServiceSpec, ...]
    lam: float = Field(0.1, ge=0, le=1)  # carbon weight λ of every service that sets none
    carbon_source: str = Field("trace:emaps_us-cal-ciso_2023", min_length=1)
    time_scale: float = Field(1.0, gt=0, allow_inf_nan=False)  # trace seconds per wall second (trace: sources)
    trace_start_h: float = Field(0.0, ge=0, allow_inf_nan=False)  # hours into a trace: source to start from
    pue: float = Field(1.5, ge=1, allow_inf_nan=False)
    replan_every_s: float = Field(300.0, gt=0, allow_inf_nan=False)
    reconcile_every_s: float = Field(2.0, gt=0, allow_inf_nan=False)
    drain_timeout_s: float = Field(15.0, ge=0, allow_inf_nan=False)  # longest wait for a slice's requests to finish
    stuck_after_s: float = Field(60.0, ge=0, allow_inf_nan=False)  # a GPU step waiting this long is given up
    hold_intervals: int = Field(12, ge=1)  # re-plan intervals a GPU so given up keeps its layout
    merge_idle_after_s: float = Field(1800.0, ge=0, allow_inf_nan=False)  # a split GPU idle this long: whole again
    transition_sla_factor: float = Field(2.0, ge=1, allow_inf_nan=False)  # p95 bound × SLA while a GPU changes
    execution: Literal["simulated", "real"] = "simulated"
    run_dir: str = Field("runs/controller", min_length=1)
    address: str | None = None  # Ray cluster HOST:PORT; None: start a local cluster
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=1, le=65535)
    ingress_replicas: int = Field(2, ge=1)
    on_exit: Literal["keep", "stop"] = "keep"

    @model_validator(mode="before")
    @classmethod
    def _services_by_name(cls, data: Any) -> Any:
        """A file writes `services:` as a mapping NAME -> settings (like configs/services.yaml)."""
        if not (isinstance(data, Mapping) and isinstance(data.get("services"), Mapping)):
            return data
        entries = []
        for name, body in data["services"].items():
            body = {} if body is None else body  # `yolo:` alone: every default
            if isinstance(body, Mapping) and "name" in body:
                raise ValueError(f"services.{name}: the key is the service's name; drop `name:` inside it")
            entries.append({**body, "name": name} if isinstance(body, Mapping) else body)
        return {**data, "services": entries}

    @field_validator("services")
    @classmethod
    def _each_once(cls, services: tuple[ServiceSpec, ...]) -> tuple[ServiceSpec, ...]:
        """(Not `min_length`: pydantic would add it to every error of a service that fails.)"""
        if not services:
            raise ValueError("no service: name at least one under `services:` (see configs/clover.example.yaml)")
        names = [s.name for s in services]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"service {', '.join(map(repr, twice))} listed twice; list each service once")
        return services

    @field_validator("trace_start_h")
    @classmethod
    def _trace_start_needs_a_trace(cls, hours: float, info: ValidationInfo) -> float:
        """(Fields validate in order: `carbon_source` is known here.) Only a trace has hours to skip."""
        source = info.data.get("carbon_source", "")
        if hours and not source.startswith("trace:"):
            raise ValueError(f"{hours:g} hours into {source!r}: only a `trace:` carbon source can start later; "
                             "drop trace_start_h (--trace-start) or use a trace")
        return hours

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)

    def service(self, name: str) -> ServiceSpec:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"service {name!r} is not in this deployment; served: {', '.join(self.names)}")

    def lam_of(self, name: str) -> float:
        """The λ a service is planned with: its own, else the deployment's."""
        own = self.service(name).lam
        return self.lam if own is None else own


def validation_context(catalog: ServiceCatalog | None = None, base_dir: Path | None = None) -> dict[str, object]:
    """What the models' validators read: the service catalog and the folder relative paths start from."""
    return {"catalog": catalog or load_services(), "base_dir": base_dir}


def load_deployment(path: str | Path, catalog: ServiceCatalog | None = None) -> DeploymentConfig:
    """The deployment file at `path`, validated; a ConfigError names the file, the field and what is allowed."""
    path = Path(path)
    return load_model(path, DeploymentConfig, validation_context(catalog, path.resolve().parent))
