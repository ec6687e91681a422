"""One accounting interval: traffic from the ingress counters, energy from the node agents (their
GPUs', and their hosts' CPU/DRAM where RAPL is readable), attribution and carbon by the
accountant, one `interval` event in run.log.

Traffic is the difference of cumulative counters (controller/serving/counters.py), taken per
ingress replica, so a replica that restarted (a new id) or several replicas serving at once are
counted exactly once. The same `TrafficWindow` also serves the overload check, with its own mark.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from controller.accounting.attribution import Accountant, IntervalAccount, SliceActivity
from controller.accounting.by_service import split_by_service
from controller.accounting.metrics import AccountingTotals
from controller.loop.ports import EventSink, Fleet, RouteBus
from controller.planning.plan import GpuPlan
from controller.serving.counters import ServingCounters, sum_counters
from mig.placement import compute_slices_of


class TrafficWindow:
    """What the ingress replicas served since this window's previous `take()`."""

    def __init__(self, bus: RouteBus, clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.clock = clock
        self._last: dict[str, ServingCounters] = {}
        self._t = clock()

    def elapsed(self) -> float:
        return self.clock() - self._t

    def take(self) -> tuple[ServingCounters, float]:
        """(the traffic since the previous take, its duration in seconds)."""
        now = self.bus.counters()
        empty = ServingCounters()
        delta = sum_counters(c.minus(self._last.get(i, empty)) for i, c in now.items())
        self._last = now
        t = self.clock()
        seconds, self._t = max(t - self._t, 1e-3), t
        return delta, seconds


@dataclass(frozen=True)
class IntervalResult:
    account: IntervalAccount
    traffic: ServingCounters
    duration_s: float

    @property
    def offered_rps(self) -> float:
        """Requests per second offered, those turned away included (saturation must not hide demand)."""
        return (self.traffic.requests() + self.traffic.failures()) / self.duration_s


class IntervalAccounting:
    """Accounts each interval; with several services also each service's part (and `unallocated`)."""

    def __init__(self, accountant: Accountant, window: TrafficWindow, fleet: Fleet, events: EventSink,
                 totals: AccountingTotals, on_interval: Callable[[IntervalAccount, str], None] | None = None) -> None:
        self.accountant = accountant
        self.window = window
        self.fleet = fleet
        self.events = events
        self.totals = totals
        self.on_interval = on_interval  # (account, service): e.g. an emissions.csv row
        self.intervals: list[dict[str, object]] = []
        self.by_service: dict[str, list[IntervalAccount]] = {}  # each service's (and `unallocated`'s) parts

    def reset(self) -> None:
        """Start a fresh interval now (e.g. when serving starts after the first deployment)."""
        self.window.take()
        self.fleet.interval_energy()

    def account(self, running: Iterable[GpuPlan], carbon_intensity: float, pue: float, slas_ms: Mapping[str, float],
                shares: Mapping[str, float] | None = None) -> IntervalResult:
        """`slas_ms`: each service's SLA; `shares`: with several services, each one's part of the
        cluster (what its Base is charged, and its part of host and embodied carbon)."""
        traffic, seconds = self.window.take()
        energy = self.fleet.interval_energy()
        gpus = self.accountant.gpus
        # Attribution follows the layout running now (slices removed mid-interval only lose their
        # share of the *attribution*; the GPU's measured energy is counted in full).
        activity = [
            SliceActivity(g.gpu_id, f"{s.placement.profile}@{s.placement.start}", compute_slices_of(s.placement.profile),
                          s.variant, energy.busy_s.get(g.gpu_id, {}).get(f"{s.placement.profile}@{s.placement.start}",
                                                                         0.0), s.batch)
            for g in running if g.gpu_id in gpus for s in g.slices
        ]
        acct = self.accountant.record_interval(
            seconds, {k: v for k, v in energy.energy_j.items() if k in gpus}, activity, traffic.by_variant(),
            carbon_intensity, pue, p95_ms=traffic.p_ms(0.95), failed=traffic.failures(), estimated=energy.estimated,
            host=energy.host, service_shares=shares)
        self.intervals.append(acct.event_fields())
        names = [s.name for s in self.accountant.services]
        if len(names) == 1:
            parts = {names[0]: acct}
        else:
            parts = split_by_service(acct, self.accountant, shares or {n: 1.0 / len(names) for n in names},
                                     {n: traffic.p_ms(0.95, n) for n in names}, {n: traffic.failures(n) for n in names})
        for name, part in parts.items():
            self._record(name, part, traffic, slas_ms.get(name), [*energy.notes, *energy.host.notes],
                         several=len(names) > 1)
        return IntervalResult(acct, traffic, seconds)

    def _record(self, service: str, acct: IntervalAccount, traffic: ServingCounters, sla_ms: float | None,
                notes: Iterable[str], several: bool) -> None:
        """One service's (or `unallocated`'s) interval: totals, the run.log event, the callback."""
        self.totals.observe_interval(service, acct)
        self.by_service.setdefault(service, []).append(acct)
        at_ingress = traffic.p_ms(0.95, service if several else None, on_slice=False)
        sla = f" (SLA {sla_ms:.1f})" if sla_ms is not None else ""
        self.events.event(
            "interval", (f"{service}: " if several else "")
            + f"{acct.requests} requests, {acct.energy_j:.0f} J, {acct.carbon_g:.3f} g "
              f"(base {acct.baseline_carbon_g:.3f} g), p95 on slice {acct.p95_ms or 0.0:.1f} ms{sla}, "
              f"at ingress {at_ingress or 0.0:.1f} ms", ingress_p95_ms=at_ingress,
            failed_by_kind=traffic.failures_by_kind(service if several else None),
            notes=list(notes), **({"service": service} if several else {}), **acct.event_fields())
        if self.on_interval:
            self.on_interval(acct, service)
