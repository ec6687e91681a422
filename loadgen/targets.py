"""What `loadgen run` offers to which service, from its flags (the grammar of configs/per_service.py).

- `--service yolo --rate 20`: one service at `/v1/infer`, as Clover has always served it;
- `--service yolo=30,albert=5`: each service at its own rate, at `/v1/{service}/infer`;
- `--service yolo,albert --rate yolo=30 --rate-trace albert=albert.csv`: rates and traces per service.

Each service needs exactly one rate: given by name (in `--service`, `--rate NAME=R` or
`--rate-trace NAME=FILE`), else by a bare `--rate R` or `--rate-trace FILE`. `--payloads` and
`--sla-ms` take the same per-service forms.
"""
from __future__ import annotations

from collections.abc import Sequence

from configs.cli import UsageError
from configs.loader import load_services
from configs.per_service import PerService, parse_per_service, parse_service_list, positive_number
from loadgen.arrivals import RateTrace, load_rate_trace
from loadgen.errors import LoadgenInputError
from loadgen.generator import INFER_PATH, ServiceLoad, service_path
from loadgen.payloads import load_payloads


def _flags(texts: dict[str, str | None], served: Sequence[str], known: Sequence[str]) -> dict[str, PerService]:
    return {flag: parse_per_service(flag, text, served=served, known=known)
            for flag, text in texts.items() if text is not None}


def _rate(name: str, inline: str | None, flags: dict[str, PerService], rate_scale: float = 1.0,
          time_scale: float = 1.0) -> RateTrace:
    """The one rate of `name`: named ones first (inline, --rate NAME=, --rate-trace NAME=), else bare ones."""
    rate, trace = flags.get("--rate"), flags.get("--rate-trace")
    named = [(f"--service {f'{name}={inline}'!r}", inline, False)] if inline is not None else []
    named += [(per.where(name), per.named[name], per is trace) for per in (rate, trace) if per and name in per.named]
    bare = [(per.where(name), per.bare, per is trace) for per in (rate, trace) if per and per.bare is not None]
    given = named or bare
    if not given:
        raise UsageError(f"no rate for {name!r}: give --service {name}=R, --rate R or --rate-trace FILE")
    if len(given) > 1:
        raise UsageError(f"{name!r} is given {len(given)} rates ({' and '.join(w for w, _, _ in given)}); give one")
    where, value, is_trace = given[0]
    if is_trace:
        return load_rate_trace(value, rate_scale, time_scale)
    return RateTrace.constant(positive_number(value, where))


def service_loads_from_flags(service: str, rate: str | None, rate_trace: str | None, payloads: str | None,
                             seed: int | None, *, rate_scale: float = 1.0, time_scale: float = 1.0) -> list[ServiceLoad]:
    """The ServiceLoads `loadgen run` sends; a UsageError or LoadgenInputError names the flag and token.
    `rate_scale`/`time_scale` scale every --rate-trace (rate × S, time × K)."""
    catalog = load_services()
    known = list(catalog.services)
    listed = parse_service_list(service, known)
    served = tuple(listed)
    flags = _flags({"--rate": rate, "--rate-trace": rate_trace, "--payloads": payloads}, served, known)
    plain = len(listed) == 1 and None in listed.values()  # `--service yolo`: the one-service path
    out = []
    for name, inline in listed.items():
        trace = _rate(name, inline, flags, rate_scale, time_scale)
        path = flags["--payloads"].value(name) if "--payloads" in flags else None
        try:
            pool = load_payloads(catalog.get(name).input, path, seed)
        except LoadgenInputError as exc:
            raise LoadgenInputError(f"{exc} (for {name})" if len(listed) > 1 else str(exc)) from None
        out.append(ServiceLoad(name, trace, tuple(pool), INFER_PATH if plain else service_path(name)))
    return out


def slas_from_flags(sla_ms: str | None, served: Sequence[str]) -> dict[str, float]:
    """`--sla-ms 36` or `--sla-ms yolo=60,albert=120`: the SLA line on each service's timeline plot."""
    if sla_ms is None:
        return {}
    per = parse_per_service("--sla-ms", sla_ms, served=served, known=list(load_services().services))
    return {name: value for name in served if (value := per.positive(name)) is not None}
