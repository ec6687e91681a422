"""A deployment from the command line: `controller --service yolo,albert --rate yolo=40,albert=8 …`,
alone or on top of a deployment file (`--config clover.yaml`).

`add_service_arguments` / `add_deployment_arguments` declare the flags (every default None, so
that a flag left out never hides the file's value); `deployment_from_args` turns the parsed
flags and the file into one validated DeploymentConfig; `services_from_flags` is its pure,
per-service part. Errors are UsageErrors naming the flag and the token (exit code 2).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from configs.cli import UsageError
from configs.deployment import DeploymentConfig, ServiceSpec, load_deployment, validation_context
from configs.loader import load_services
from configs.per_service import PerService, parse_per_service, parse_service_list
from configs.schema import ServiceCatalog

M = TypeVar("M", bound=BaseModel)

# ServiceSpec field -> (flag, argparse dest, help)
SERVICE_FLAGS: dict[str, tuple[str, str, str]] = {
    "rate_rps": ("--rate", "rate", ("expected request rate in req/s: R for every service, or yolo=40,albert=8 "
                                    "(capacity is never planned below it; default 20)")),
    "sla_ms": ("--sla-ms", "sla_ms", ("p95 latency SLA in ms: MS for every service, or yolo=60,albert=120 "
                                      "(default: each service's Base p95)")),
    "lam": ("--lambda", "lam", "carbon weight λ in [0, 1]: L for every service, or yolo=0.1,albert=0.3 (default 0.1)"),
    "variants": ("--variants", "variants", ("variants the planner may use: b0,b1 with one service, or "
                                            "yolo=yolo11n,yolo11s,albert=base,large (default: all)")),
    "min_accuracy": ("--min-accuracy", "min_accuracy", ("accuracy floor in the service's metric: A for every "
                                                        "service, or albert=85 (default: none)")),
}


@dataclass(frozen=True)
class _Flag:
    option: str
    field: str
    type: Callable[[str], object]
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.option.removeprefix("--").replace("-", "_")


# The deployment-wide flags a file may also set (dests as `controller run` has always had them).
DEPLOYMENT_FLAGS: tuple[_Flag, ...] = (
    _Flag("--carbon-source", "carbon_source", str,
          "trace:NAME_OR_PATH, constant:G, electricitymaps:ZONE, watttime:REGION, uk[:REGION]"),
    _Flag("--time-scale", "time_scale", float, "trace seconds per wall second for trace: sources (720 = a day in 2 min)"),
    _Flag("--trace-start", "trace_start_h", float, "hours into a trace: source to start from (default 0)"),
    _Flag("--pue", "pue", float, "data-centre power usage effectiveness applied to all energy"),
    _Flag("--replan-every", "replan_every_s", float, "seconds between re-plans"),
    _Flag("--reconcile-every", "reconcile_every_s", float, "seconds between reconciliations of what runs with the plan"),
    _Flag("--drain-timeout", "drain_timeout_s", float,
          "seconds a slice's in-flight requests may take to finish before its replica is stopped anyway"),
    _Flag("--stuck-after", "stuck_after_s", float,
          "seconds a GPU's re-partition may wait for capacity (no bridge possible) before it keeps its layout"),
    _Flag("--hold-intervals", "hold_intervals", int,
          "re-plan intervals a GPU whose re-partition was given up keeps its layout before it is tried again"),
    _Flag("--merge-idle-after", "merge_idle_after_s", float,
          "seconds a split GPU must stay idle in every plan before it is merged back into one whole instance "
          "(0: never)"),
    _Flag("--transition-sla-factor", "transition_sla_factor", float,
          "while one GPU is re-partitioned, the replicas that stay up may run at up to this × the SLA "
          "(1: strict; a step that would exceed it waits or is bridged)"),
    _Flag("--execution", "execution", str, "simulated: performance-model timing and energy; real: run the models",
          ("simulated", "real")),
    _Flag("--run-dir", "run_dir", str, "where run.log, run.jsonl, emissions.csv and the desired state go"),
    _Flag("--address", "address", str, "Ray cluster address HOST:PORT (default: start a local cluster)"),
    _Flag("--host", "host", str, "HTTP bind address of the ingress"),
    _Flag("--port", "port", int, "HTTP port of the ingress"),
    _Flag("--ingress-replicas", "ingress_replicas", int,
          "ingress replicas; each routes by the same table, so one may die without a failed request"),
    _Flag("--on-exit", "on_exit", str, "keep: serving continues without a controller; stop: delete the replicas "
                                       "and the ingress", ("keep", "stop")),
)


def add_service_arguments(parser: argparse.ArgumentParser, *, config: bool = True) -> None:
    """`--service` and the per-service flags (and `--config FILE` unless `config=False`)."""
    if config:
        parser.add_argument("--config", metavar="FILE",
                            help="deployment file (see configs/clover.example.yaml); flags typed as well override it")
    parser.add_argument("--service", metavar="NAMES",
                        help="services to serve, from configs/services.yaml: yolo or yolo,albert "
                             "(yolo=40,albert=8 also sets their rates); default: the --config file's")
    for flag, dest, help_ in SERVICE_FLAGS.values():
        parser.add_argument(flag, dest=dest, metavar="VALUES", help=help_)


def add_deployment_arguments(parser: argparse.ArgumentParser) -> None:
    """The deployment-wide flags of DEPLOYMENT_FLAGS; their help shows DeploymentConfig's defaults."""
    for f in DEPLOYMENT_FLAGS:
        default = DeploymentConfig.model_fields[f.field].default
        parser.add_argument(f.option, dest=f.dest, type=f.type, choices=f.choices,
                            help=f.help if default is None else f"{f.help} (default: {default})")


def _validated(model: type[M], values: Mapping[str, object], where: Mapping[str, str], fallback: str,
               catalog: ServiceCatalog) -> M:
    """`model` from `values`; a problem is reported against the flag that set the field (`where`)."""
    try:
        return model.model_validate(dict(values), context=validation_context(catalog))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            lines.append(f"{where.get(field) or f'{fallback}, field {field}'}: "
                         f"{err['msg'].removeprefix('Value error, ')}")
        raise UsageError("\n".join(lines)) from None


def services_from_flags(service: str | None = None, rate: str | None = None, sla_ms: str | None = None,
                        lam: str | None = None, variants: str | None = None, min_accuracy: str | None = None, *,
                        base: Sequence[ServiceSpec] = (), catalog: ServiceCatalog | None = None) -> tuple[ServiceSpec, ...]:
    """The served services, from the flags' text as typed (`rate="yolo=40,albert=8"`) over `base`
    (a deployment file's services).

    `service` (`yolo,albert`, or `yolo=40,albert=8` with rates) replaces `base`'s list; a service
    in both keeps its values from `base` except those a flag sets. A flag's bare value applies to
    every served service the flag does not name. Errors name the flag and the offending token:
    a non-number, a service named twice, a value for a service that is not served, an unknown
    service, a value out of range."""
    catalog = catalog or load_services()
    known = catalog.services
    if service is not None:
        listed = parse_service_list(service, known)
    elif base:
        listed = dict.fromkeys(s.name for s in base)
    else:
        raise UsageError("no service to serve: give --service NAME[,NAME...] or a deployment file with --config")
    served = tuple(listed)
    texts = dict(zip(SERVICE_FLAGS, (rate, sla_ms, lam, variants, min_accuracy)))
    flags = {f: parse_per_service(SERVICE_FLAGS[f][0], text, served=served, known=known)
             for f, text in texts.items() if text is not None}
    from_base = {s.name: s for s in base}
    return tuple(_one_service(name, listed[name], service, flags, from_base.get(name), catalog) for name in served)


def _one_service(name: str, inline_rate: str | None, service_text: str | None, flags: Mapping[str, PerService],
                 base: ServiceSpec | None, catalog: ServiceCatalog) -> ServiceSpec:
    values: dict[str, object] = base.model_dump() if base else {"name": name}
    where: dict[str, str] = {}
    if inline_rate is not None:
        if "rate_rps" in flags and name in flags["rate_rps"].named:
            raise UsageError(f"the rate of {name!r} is given twice: --service {service_text!r} and "
                             f"{flags['rate_rps'].where(name)}; give it once")
        values["rate_rps"], where["rate_rps"] = inline_rate, f"--service {f'{name}={inline_rate}'!r}"
    for field, per in flags.items():
        value = per.value(name)
        if value is None or field in where:
            continue
        values[field] = tuple(v.strip() for v in value.split(",") if v.strip()) if field == "variants" else value
        where[field] = per.where(name)
    origin = "the deployment file" if base else "the defaults"
    flags_typed = "".join(f" and {w}" for w in where.values())
    return _validated(ServiceSpec, values, where, f"service {name!r} (from {origin}{flags_typed})", catalog)


def deployment_from_args(args: argparse.Namespace, *, catalog: ServiceCatalog | None = None,
                         **defaults: object) -> DeploymentConfig:
    """The deployment the command line asks for: `--config FILE` (if given) with the flags on top.

    Precedence, highest first:
    1. a flag typed on the command line;
    2. the deployment file (`--config`);
    3. `defaults`: the caller's own, by DeploymentConfig field name (the demo's `lam=0.5`, …);
    4. DeploymentConfig's defaults (`controller run`'s).
    Per service, flags override the file field by field: `--service` replaces the file's list of
    services (each keeps its settings from the file), `--rate yolo=50` changes yolo's rate only, a
    bare value (`--rate 20`, `--lambda 0.2`) sets it for every served service the flag does not
    name; a bare `--lambda` is also the deployment's λ.

    `args` needs the dests of add_service_arguments (and may have those of add_deployment_arguments);
    missing ones count as not typed. Raises UsageError (bad flags) or ConfigError (bad file).
    """
    catalog = catalog or load_services()
    path = getattr(args, "config", None)
    file = load_deployment(path, catalog) if path else None
    texts = [getattr(args, dest, None) for _, dest, _ in SERVICE_FLAGS.values()]
    services = services_from_flags(getattr(args, "service", None), *texts,
                                   base=file.services if file else (), catalog=catalog)
    values: dict[str, object] = {**defaults, **(file.model_dump(exclude_unset=True, exclude={"services"}) if file else {})}
    where: dict[str, str] = {}
    for f in DEPLOYMENT_FLAGS:
        typed = getattr(args, f.dest, None)
        if typed is not None:
            values[f.field], where[f.field] = typed, f"{f.option} {typed!r}"
    lam_text = getattr(args, "lam", None)
    if lam_text is not None:
        bare = parse_per_service("--lambda", lam_text, served=[s.name for s in services], known=catalog.services).bare
        if bare is not None:
            values["lam"], where["lam"] = bare, f"--lambda {bare!r}"
    values["services"] = services
    return _validated(DeploymentConfig, values, where, f"deployment{f' file {path}' if path else ''}", catalog)
