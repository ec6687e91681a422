"""The control bus: one small detached Ray actor where the controller and every ingress replica meet.

Why a separate actor: the ingress is replicated and any replica (or the controller) may restart
at any moment, so neither can hold what the others need. The bus holds
- the routing table the controller published last (ingress replicas pull it on start and poll
  for a new version every `SYNC_PERIOD_S`, acknowledging the version they route by);
- each ingress replica's cumulative `ServingCounters` (the controller sums them per interval);
- operator commands (`POST /v1/config`, `POST /v1/plan`) until the controller takes them; a
  config change shows in the status at once and wakes the controller;
- the status document and the accounting snapshot the controller publishes; any ingress serves
  them (`GET /v1/status`, `GET /metrics` rendered from the summed counters + that snapshot).
It is a cache, not the source of truth: the controller persists its desired state on disk and
republishes the table on every reconcile tick, so a restarted bus is whole again within one tick,
and ingress replicas keep routing by their last table meanwhile. Only commands submitted while
the bus restarts are lost (the HTTP caller got a 200 but nobody applied it: documented).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import ray
from ray.actor import ActorHandle

from configs.cluster import NAMESPACE
from controller.accounting.metrics import AccountingSnapshot
from controller.planning.plan import Plan
from controller.serving.counters import ServingCounters, sum_counters
from controller.serving.router import RoutingTable

BUS_NAME = "clover-bus"
SYNC_PERIOD_S = 0.25  # how often an ingress replica reports and looks for a new table
REPORT_TTL_S = 900.0  # a silent ingress replica's last counters are kept this long (then dropped)
CALL_TIMEOUT_S = 10.0
LIVE_S = 2.0  # an ingress replica that reported within this long is alive

JsonDoc = dict[str, object]


@dataclass(frozen=True)
class ConfigCommand:
    """POST /v1/config: new λ and/or SLA (for one service, or all when `service` is None)."""

    lam: float | None = None
    sla_ms: float | None = None
    service: str | None = None


@dataclass(frozen=True)
class PlanCommand:
    """POST /v1/plan: serve this plan now (an operator override, validated by the ingress)."""

    plan: Plan


Command = ConfigCommand | PlanCommand


@dataclass(frozen=True)
class IngressReport:
    ingress_id: str
    table_version: int | None  # the table it routes by (None: none yet)
    counters: ServingCounters
    seen_at: float  # wall clock of its last report


@dataclass
class _State:
    table: RoutingTable | None = None
    reports: dict[str, IngressReport] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    status: JsonDoc = field(default_factory=dict)
    accounting: AccountingSnapshot = field(default_factory=AccountingSnapshot)


class ControlBus:
    """The actor body (all methods async: they run on the actor's event loop, one at a time)."""

    def __init__(self) -> None:
        self._s = _State()
        self._wake = asyncio.Event()
        self.started_at = time.time()

    async def ping(self) -> float:
        return self.started_at

    # -- routing -------------------------------------------------------------------------------
    async def publish(self, table: RoutingTable) -> None:
        self._s.table = table

    async def table(self) -> RoutingTable | None:
        return self._s.table

    async def sync(self, ingress_id: str, have_version: int | None,
                   counters: ServingCounters) -> tuple[RoutingTable | None, int]:
        """An ingress replica's heartbeat: its counters in; out, the table when it has another
        version, and how many ingress replicas are alive (they split each replica's queue bound)."""
        now = time.time()
        self._s.reports[ingress_id] = IngressReport(ingress_id, have_version, counters, now)
        live = sum(1 for r in self._s.reports.values() if now - r.seen_at < LIVE_S)
        t = self._s.table
        return (t if t is not None and t.version != have_version else None), live

    async def reports(self) -> list[IngressReport]:
        now = time.time()
        self._s.reports = {k: r for k, r in self._s.reports.items() if now - r.seen_at < REPORT_TTL_S}
        return list(self._s.reports.values())

    # -- operator commands -----------------------------------------------------------------------
    async def submit(self, cmd: Command) -> None:
        self._s.commands.append(cmd)
        if isinstance(cmd, ConfigCommand):  # visible in GET /v1/status at once
            self._s.status = apply_config(self._s.status, cmd)
        self._wake.set()

    async def wait_commands(self, timeout_s: float) -> list[Command]:
        """The commands submitted so far, waiting up to `timeout_s` for the first one."""
        if not self._s.commands:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, timeout_s))
            except TimeoutError:
                pass
        self._wake.clear()
        cmds, self._s.commands = self._s.commands, []
        return cmds

    # -- what the ingress serves ------------------------------------------------------------------
    async def set_status(self, status: JsonDoc, accounting: AccountingSnapshot) -> None:
        pending = [c for c in self._s.commands if isinstance(c, ConfigCommand)]
        for c in pending:  # a change the controller has not taken yet stays visible
            status = apply_config(status, c)
        self._s.status = status
        self._s.accounting = accounting

    async def status(self) -> JsonDoc:
        return {**self._s.status, "routing_version": self._s.table.version if self._s.table else None}

    async def metrics_inputs(self) -> tuple[ServingCounters, AccountingSnapshot]:
        """What GET /metrics renders: every ingress replica's counters summed (a replica that
        restarted is a new series; its predecessor's last counts stay until REPORT_TTL_S) and the
        loop's accounting."""
        return sum_counters(r.counters for r in self._s.reports.values()), self._s.accounting


def apply_config(status: JsonDoc, cmd: ConfigCommand) -> JsonDoc:
    """The status document with a config change applied (what GET /v1/status shows)."""
    out = dict(status)
    if cmd.lam is not None:
        out["lambda"] = cmd.lam
    if cmd.sla_ms is not None:
        services = out.get("services")
        if isinstance(services, dict):
            out["services"] = {name: ({**doc, "sla_ms": cmd.sla_ms} if cmd.service in (None, name) and
                                      isinstance(doc, dict) else doc)
                               for name, doc in services.items()}
        if cmd.service is None or cmd.service == out.get("service"):
            out["sla_ms"] = cmd.sla_ms
    return out


# ---- the controller's typed client --------------------------------------------------------------
class BusClient:
    """Typed, bounded calls from the controller process to the bus (one method per call)."""

    def __init__(self, handle: ActorHandle, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._h = handle
        self._timeout = timeout_s

    def started_at(self) -> float:
        return ray.get(self._h.ping.remote(), timeout=self._timeout)

    def publish(self, table: RoutingTable) -> None:
        ray.get(self._h.publish.remote(table), timeout=self._timeout)

    def table(self) -> RoutingTable | None:
        return ray.get(self._h.table.remote(), timeout=self._timeout)

    def reports(self) -> list[IngressReport]:
        return ray.get(self._h.reports.remote(), timeout=self._timeout)

    def acknowledged(self, version: int) -> bool:
        """Every ingress replica alive now routes by table `version` (and at least one is alive)."""
        now = time.time()
        live = [r for r in self.reports() if now - r.seen_at < LIVE_S]
        return bool(live) and all(r.table_version == version for r in live)

    def counters(self) -> dict[str, ServingCounters]:
        return {r.ingress_id: r.counters for r in self.reports()}

    def submit(self, cmd: Command) -> None:
        ray.get(self._h.submit.remote(cmd), timeout=self._timeout)

    def wait_commands(self, timeout_s: float) -> list[Command]:
        return ray.get(self._h.wait_commands.remote(timeout_s), timeout=timeout_s + self._timeout)

    def set_status(self, status: JsonDoc, accounting: AccountingSnapshot) -> None:
        ray.get(self._h.set_status.remote(status, accounting), timeout=self._timeout)

    def status(self) -> JsonDoc:
        return ray.get(self._h.status.remote(), timeout=self._timeout)


def bus_handle(create: bool = False) -> ActorHandle:
    """The bus actor (created detached and restartable when `create` and it does not exist)."""
    if not create:
        return ray.get_actor(BUS_NAME, namespace=NAMESPACE)
    return ray.remote(ControlBus).options(
        name=BUS_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=-1, num_cpus=0, max_concurrency=64,
    ).remote()
