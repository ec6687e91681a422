"""The desired state: the plan the cluster should converge to, versioned and persisted.

Why a file on the head node: it must outlive every process — the controller (killed, restarted,
detached), the Ray cluster itself (`ray stop` and a fresh start) — and be readable by a person.
It lives at RUN_DIR/state/desired.json (the same `--run-dir` means the same deployment), written
atomically (temporary file, fsync, rename), so a crash mid-write leaves the previous version.
A restarted controller loads it and adopts what already runs instead of re-deploying.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller.planning.plan import Plan

FORMAT = 1


class StateFileError(ValueError):
    """The state file exists but cannot be read; the message says which file and why."""


@dataclass(frozen=True)
class DesiredState:
    version: int
    plan: Plan | None
    lam: float
    sla_ms: float
    rate_rps: float  # the rate the plan was sized for
    updated_at: float
    # An operator's `POST /v1/plan`: automatic re-plans (load band, overload) leave it alone until
    # the next interval or a config change. Persisted, so a restarted controller keeps honouring it.
    pinned: bool = False
    # The rate each service's part of the plan was sized for, when several are served (their sum
    # is `rate_rps`); empty with one service.
    rates: dict[str, float] = field(default_factory=dict)
    # GPUs whose re-partition was given up (controller/loop/reconciler.py) -> timer re-plans they
    # keep their layout. Persisted, so a restarted controller does not wait out the same step again.
    held: dict[str, int] = field(default_factory=dict)
    # Split GPUs every plan has left idle -> the wall time they became so: merged back into one
    # instance once idle long enough (controller/planning/consolidation.py). Persisted, so a
    # restarted controller keeps counting instead of starting the wait again.
    idle_since: dict[str, float] = field(default_factory=dict)

    def with_plan(self, plan: Plan, rates: dict[str, float], pinned: bool = False) -> DesiredState:
        return replace(self, version=self.version + 1, plan=plan, rate_rps=sum(rates.values()), updated_at=time.time(),
                       pinned=pinned, rates=dict(rates) if len(rates) > 1 else {})

    def sized_rates(self, services: tuple[str, ...]) -> dict[str, float]:
        """The rate each served service's plan was sized for (one service: `rate_rps`)."""
        if len(services) == 1:
            return {services[0]: self.rate_rps}
        return {s: self.rates.get(s, 0.0) for s in services}

    def to_json(self) -> dict[str, object]:
        doc = {"format": FORMAT, "version": self.version, "plan": self.plan.to_json() if self.plan else None,
               "lambda": self.lam, "sla_ms": self.sla_ms, "rate_rps": self.rate_rps, "updated_at": self.updated_at,
               "pinned": self.pinned}
        return {**doc, **({"rates": self.rates} if self.rates else {}), **({"held": self.held} if self.held else {}),
                **({"idle_since": self.idle_since} if self.idle_since else {})}

    @classmethod
    def from_json(cls, d: dict) -> DesiredState:
        return cls(int(d["version"]), Plan.from_json(d["plan"]) if d.get("plan") else None, float(d["lambda"]),
                   float(d["sla_ms"]), float(d["rate_rps"]), float(d["updated_at"]), bool(d.get("pinned", False)),
                   {str(k): float(v) for k, v in (d.get("rates") or {}).items()},
                   {str(k): int(v) for k, v in (d.get("held") or {}).items()},
                   {str(k): float(v) for k, v in (d.get("idle_since") or {}).items()})


class StateStore:
    """DesiredState in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> DesiredState | None:
        if not self.path.exists():
            return None
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
            return DesiredState.from_json(doc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateFileError(f"{self.path}: cannot read the desired state ({exc}); move the file away to "
                                 "start this deployment from a fresh plan") from None

    def save(self, state: DesiredState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".desired-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state.to_json(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
