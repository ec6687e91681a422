"""Per-service command-line values, one grammar for `controller` and `loadgen`.

- `--service yolo,albert` lists services; `--service yolo=30,albert=5` also gives each a value
  (a rate: loadgen's traffic, the controller's expected load).
- A per-service flag takes `VALUE` (every served service), `NAME=VALUE,NAME=VALUE` (a value per
  service) or both (`20,albert=8`: the bare value for every service the flag does not name).
  A value may hold commas itself (`--variants yolo=yolo11n,yolo11s,albert=base`): a comma starts
  a new entry only where `NAME=` follows it, so paths and variant lists need no quoting.

Pure. Every error is a UsageError naming the flag and the token the user typed, because with
several services "invalid value" alone does not say which one to fix.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from configs.cli import UsageError

_ENTRY = re.compile(r"^\s*([A-Za-z][\w-]*)\s*=(.*)$", re.DOTALL)
_NEXT_ENTRY = re.compile(r",(?=\s*[A-Za-z][\w-]*\s*=)")


def unknown_service_text(name: str, known: Iterable[str]) -> str:
    """What to say about a service that configs/services.yaml does not define: the ones it does."""
    return (f"unknown service {name!r}; configured services: {', '.join(sorted(known))} "
            "(add one to configs/services.yaml, or fix the name)")


def unknown_service(name: str, known: Iterable[str], where: str) -> UsageError:
    return UsageError(f"{where}: {unknown_service_text(name, known)}")


def parse_service_list(text: str, known: Iterable[str], flag: str = "--service") -> dict[str, str | None]:
    """`yolo,albert` -> {yolo: None, albert: None}; `yolo=30,albert` -> {yolo: "30", albert: None}.

    In the order given; a service named twice, an empty entry, `NAME=` without a value or a
    service not in `known` is an error."""
    known = set(known)
    out: dict[str, str | None] = {}
    for token in text.split(","):
        name, eq, value = (part.strip() for part in token.partition("="))
        where = f"{flag} {text!r}"
        if not name:
            raise UsageError(f"{where}: empty entry; give NAME[,NAME...] or NAME=VALUE[,NAME=VALUE...]")
        if name not in known:
            raise unknown_service(name, known, where)
        if name in out:
            raise UsageError(f"{where}: service {name!r} named twice; name each service once")
        if eq and not value:
            raise UsageError(f"{where}: no value after {name + '='!r}")
        out[name] = value if eq else None
    return out


@dataclass(frozen=True)
class PerService:
    """One per-service flag as typed: a bare value for every service it does not name, and values by name."""

    flag: str
    text: str
    bare: str | None = None
    named: Mapping[str, str] = field(default_factory=dict)

    def value(self, service: str) -> str | None:
        return self.named.get(service, self.bare)

    def where(self, service: str) -> str:
        """`--rate 'yolo=abc'`: the flag and the token that gave `service` its value, for error messages."""
        token = f"{service}={self.named[service]}" if service in self.named else self.bare
        return f"{self.flag} {token!r}"

    def positive(self, service: str) -> float | None:
        """The value for `service` as a finite number > 0 (None when the flag gives it none)."""
        value = self.value(service)
        return None if value is None else positive_number(value, self.where(service))


def positive_number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{where}: expected a number > 0, got {text!r}")
    return value


def parse_per_service(flag: str, text: str, *, served: Sequence[str], known: Iterable[str]) -> PerService:
    """Split `text` into a bare value and values by service; every name must be served (and configured)."""
    known = set(known)
    bare: str | None = None
    named: dict[str, str] = {}
    for entry in _NEXT_ENTRY.split(text):
        match = _ENTRY.match(entry)
        if match is None:  # only the first entry can be bare: the split happens before `NAME=`
            bare = entry.strip()
            if not bare:
                raise UsageError(f"{flag} {text!r}: empty value; give VALUE or NAME=VALUE[,NAME=VALUE...]")
            continue
        name, value = match.group(1), match.group(2).strip()
        if name not in known:
            raise unknown_service(name, known, f"{flag} {entry.strip()!r}")
        if name not in served:
            raise UsageError(f"{flag} {entry.strip()!r}: {name!r} is not served (served: {', '.join(served)}); "
                             "add it to --service or drop the value")
        if name in named:
            raise UsageError(f"{flag} {text!r}: service {name!r} given twice; give each service one value")
        if not value:
            raise UsageError(f"{flag} {entry.strip()!r}: no value after {name + '='!r}")
        named[name] = value
    return PerService(flag, text, bare, named)
