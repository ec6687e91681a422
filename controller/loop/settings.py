"""What the operator chose for the control loop (flags of `controller run`), as one immutable value.

A config change (`POST /v1/config`) makes a new `LoopSettings` with `replace`; nothing rewrites
settings in place, so every part of the loop sees one consistent set per tick.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from controller.planning.load_forecast import ForecastParams


@dataclass(frozen=True)
class RunDevice:
    """What the replicas of a real-execution run run on, as run.log and the demo's summary name it."""

    device: str  # "CPU (8 cores, x86_64)"
    profile: str  # the performance profile the planner predicts with
    meter: str  # "RAPL", "RAPL (estimated: not readable)", "NVML"

    def fields(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class ServiceSettings:
    """One served service's own choices; several are served side by side on shared GPUs."""

    name: str
    lam: float
    sla_ms: float | None  # None: Base's p95 at the expected rate, fixed at start
    rate_rps: float
    variants: tuple[str, ...] | None = None
    min_accuracy: float | None = None  # a hard floor on the service's request-weighted accuracy


@dataclass(frozen=True)
class LoopSettings:
    """The first service's choices (`service` … `variants`), the cluster-wide ones, and the
    services served beside the first (`more_services`; empty: one service, today's loop)."""

    service: str
    lam: float
    sla_ms: float | None  # None: Base's p95 at the expected rate (Clover's SLA), fixed at start
    replan_every_s: float
    rate_rps: float  # expected request rate for the first plan (measured afterwards)
    pue: float = 1.5
    execution: str = "simulated"
    variants: tuple[str, ...] | None = None  # variants the planner may use (None: all of the service)
    headroom: float = 1.1  # capacity kept above the measured rate while slices are down
    # While one GPU step runs (seconds), the replicas that stay up may run at a p95 of up to
    # this × SLA; never more. 1.0 is strict, but then a fully used 2-GPU plan can never change.
    transition_sla_factor: float = 2.0
    drain_timeout_s: float = 15.0
    # How long a GPU step may wait for capacity while nothing else moves and no bridge can be
    # built (controller/loop/bridge.py) before its GPU keeps its layout (an `error` event says so).
    stuck_after_s: float = 60.0
    # Timer intervals a GPU so held keeps its layout in the plans before a change is tried again
    # (at once when the fleet changes: a new GPU may have room for a bridge).
    hold_intervals: int = 12
    # Seconds a split GPU must stay idle in every plan before it is merged back into one whole-GPU
    # instance (controller/planning/consolidation.py); 0: never.
    merge_idle_after_s: float = 1800.0
    replica_timeout_s: float = 120.0
    threads: int = 1
    weights_dir: str | None = None
    min_rate_rps: float = 1.0
    # Hours of carbon forecast handed to the planner: a new plan is adopted only if it pays back
    # its reconfiguration cost over them (controller/planning/planner.py). 0: re-plan on the current value.
    forecast_hours: int = 6
    # How often the reconciler compares what runs with the desired state and converges (seconds).
    reconcile_every_s: float = 2.0
    ingress_replicas: int = 2
    # The load forecast and band rule (controller/planning/load_forecast.py), in wall seconds.
    forecast: ForecastParams = field(default_factory=ForecastParams)
    # Share of the SLA the planner always keeps in reserve: it plans for the SLA less the larger of
    # this and the measured serving overhead (controller/loop/triggers.py); 0: up to the SLA itself
    # until an overhead has been measured.
    sla_margin: float = 0.0
    device: RunDevice | None = None  # real execution: the device, profile and meter (None: simulated GPUs)
    min_accuracy: float | None = None  # the first service's accuracy floor
    more_services: tuple[ServiceSettings, ...] = ()

    @property
    def services(self) -> tuple[ServiceSettings, ...]:
        first = ServiceSettings(self.service, self.lam, self.sla_ms, self.rate_rps, self.variants, self.min_accuracy)
        return (first, *self.more_services)

    def for_service(self, name: str) -> LoopSettings:
        """These settings as if `name` were the one service (what its ServiceModel sees)."""
        s = next((x for x in self.services if x.name == name), None)
        if s is None:
            raise KeyError(f"service {name!r} is not served; served: {', '.join(x.name for x in self.services)}")
        return replace(self, service=s.name, lam=s.lam, sla_ms=s.sla_ms, rate_rps=s.rate_rps, variants=s.variants,
                       min_accuracy=s.min_accuracy, more_services=())

    def with_service(self, name: str, **changes: object) -> LoopSettings:
        """A new value with one service's choices changed (λ, SLA, …)."""
        if name == self.service:
            return replace(self, **changes)  # type: ignore[arg-type]
        more = tuple(replace(x, **changes) if x.name == name else x for x in self.more_services)  # type: ignore[arg-type]
        return replace(self, more_services=more)

    @property
    def sla(self) -> float:
        """The SLA in ms; only valid once the loop has fixed it (see ControlLoop)."""
        if self.sla_ms is None:
            raise ValueError("the SLA is not fixed yet")
        return self.sla_ms
