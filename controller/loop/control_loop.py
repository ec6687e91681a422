"""The control loop: read carbon → plan → reconcile → account, as a short sequence.

Two clocks drive it. Every `replan_every_s` an *interval* ends: its energy, carbon and traffic are
accounted, the carbon intensity is read, and the planner produces a new desired plan, which is
persisted (controller/loop/state.py). Every `reconcile_every_s` — and at once after an operator
command — the reconciler (controller/loop/reconciler.py) compares the desired plan with what runs
and converges, make-before-break. Between the two, an overload check re-plans for more capacity
as soon as the p95 on the slices exceeds the SLA, instead of waiting for the timer.

Everything the loop needs to resume lives outside this process: the desired plan on disk, what
runs in Serve and on the node agents, routing on the control bus. `ControlLoop` holds only caches
of them, so `kill -9` and the same command again resumes without restarting a replica.

`ControlLoop` is the sequence and the state it caches; each concern it sequences has its own
module: re-plan triggers (triggers.py), carbon readings (carbon_feed.py), the planner's view of the
service (service_model.py), convergence (reconciler.py, rollout.py), accounting (interval.py), the
clocks (driver.py), start-up (startup.py) and the status document (status.py).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from configs import load_services
from configs.cluster import REPLICA_PREFIX
from controller.accounting.attribution import Accountant, IntervalAccount
from controller.accounting.metrics import AccountingTotals, ReplicaPlacement
from controller.carbon.base import CarbonSource
from controller.loop.carbon_feed import CarbonFeed
from controller.loop.driver import drive
from controller.loop.interval import IntervalAccounting, IntervalResult, TrafficWindow
from controller.loop.ports import EventSink, Fleet, ReplicaRuntime
from controller.loop.reconciler import Reconciler, ReconcileReport
from controller.loop.rollout import Rollout, StepContext, StepOutcome
from controller.loop.routes import Routes
from controller.loop.service_model import Workload
from controller.loop.settings import LoopSettings
from controller.loop.startup import discover_gpus, fixed_slas, log_start
from controller.loop.state import DesiredState, StateStore
from controller.loop.status import status_doc
from controller.loop.triggers import Demand
from controller.loop.view import actual_gpu_plan
from controller.planning.consolidation import idle_clocks, merge_idle
from controller.planning.plan import GpuPlan, Plan, describe, plan_changed
from controller.planning.planner import InfeasibleError
from controller.serving.control_bus import BusClient, Command, ConfigCommand, PlanCommand
from gpu_node.records import Reservation
from models.performance import PerformanceModel


@dataclass
class LoopStats:
    reconfigurations: int = 0  # GPU steps carried out
    rollbacks: int = 0
    replans: int = 0


class ControlLoop:
    """Plans and reconciles one service on the cluster; `run()` loops until `stop()`."""

    def __init__(self, settings: LoopSettings, *, events: EventSink, carbon: CarbonSource, fleet: Fleet,
                 runtime: ReplicaRuntime, bus: BusClient, store: StateStore, perf: PerformanceModel | None = None,
                 on_interval: Callable[[IntervalAccount, str], None] | None = None) -> None:
        self.events = events
        self.bus = bus
        self.store = store
        self.perf = perf or PerformanceModel.default()
        catalog = load_services()
        self.services = {s.name: catalog.get(s.name) for s in settings.services}
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._forced: Plan | None = None
        self._replan_now: str | None = None
        self.capacity: dict[str, Reservation] = {}  # node -> the capacity it holds back and frees (last tick)
        self.routes = Routes(bus, events)
        self.rollout = Rollout(fleet, runtime, self.routes, events)
        self.reconciler = Reconciler(fleet, runtime, self.routes, self.rollout, events)
        self.wall_clock: Callable[[], float] = time.time  # the idle clocks of consolidation (persisted)
        self.desired = store.load()
        gpus = discover_gpus(fleet, self.desired, events)
        self.gpus = gpus
        self.settings = settings = fixed_slas(settings, self.services, gpus, self.perf)
        self.workload = Workload.of(settings, self.services, self.perf)
        self.workload.warm(set(gpus.values()))
        first, *others = self.services.values()
        self.accountant = Accountant(first, gpus, self.perf, others=others)
        self.totals = AccountingTotals()
        self.carbon = CarbonFeed(carbon, events, self.totals)
        self.accounting = IntervalAccounting(self.accountant, TrafficWindow(bus), fleet, events, self.totals,
                                             on_interval)
        sized = self.desired.sized_rates(self.workload.names) if self.desired else {}
        self.demand = Demand(bus, events, {s.name: s.rate_rps for s in settings.services}, sized,
                             settings.reconcile_every_s, settings.forecast, sla_margin=settings.sla_margin)
        log_start(events, settings, gpus, carbon.name, self.desired)

    # -- the plan ---------------------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        return self.desired.plan if self.desired else None

    @property
    def pending_replan(self) -> str | None:
        """Why the next step re-plans before reconciling (an operator command, overload, fleet change)."""
        return self._replan_now

    def _ctx(self) -> StepContext:
        return StepContext(self.workload, dict(self.demand.rates), self.carbon_now)

    @property
    def rate_rps(self) -> float:
        """The rate the next plan is sized for, all services together."""
        return sum(self.demand.rates.values())

    def slas(self) -> dict[str, float]:
        """Each service's SLA (ms), as the operator set it or as fixed at start."""
        return {s.name: s.sla_ms or 0.0 for s in self.settings.services}

    def planning_slas(self) -> dict[str, float]:
        """The SLA each service is planned for: its own less its measured serving overhead."""
        return {name: self.demand.planning_sla_ms(name, sla) for name, sla in self.slas().items()}

    @property
    def carbon_now(self) -> float:
        return self.carbon.now

    def replan(self, reason: str = "timer") -> None:
        """Solve for the current carbon intensity and rate; the result becomes the desired state."""
        forced, self._forced = self._forced, None
        if not self.gpus:
            self.events.event("error", "no GPU left to plan for", where="replan", error="no gpus")
            return
        t0 = time.perf_counter()
        current = self.plan
        slas = self.planning_slas()
        forecast: tuple[float, ...] = ()
        if self.settings.forecast_hours and current is not None and reason == "timer":
            forecast = self.carbon.forecast(self.settings.forecast_hours)
        held = tuple((g.gpu_id, g.layout) for g in current.gpus if g.gpu_id in self._held) if current else ()
        try:
            target = forced or self.workload.plan(tuple(self.gpus.items()), self.demand.rates, self.carbon_now,
                                                  current, forecast, slas, held)
        except InfeasibleError as exc:
            self.events.event("error", f"no plan meets the SLA, keeping the current one: {exc}", where="replan",
                              error=str(exc))
            return
        target = replace(target, gpus=tuple(g for g in target.gpus if g.gpu_id in self.gpus))
        if not forced:
            target = self._consolidate(target)
        changed = plan_changed(current, target)
        p = target.predicted
        self.stats.replans += 1
        self.events.event("plan", f"{'forced ' if forced else ''}plan {'changes' if changed else 'unchanged'} "
                                  f"({reason}): {describe(target)}", plan=target.to_json(), reason=reason,
                          predicted_carbon_g_per_h=p.carbon_g_per_h, predicted_accuracy=p.accuracy,
                          predicted_p95_ms=p.p95_ms, planning_sla_ms=slas[self.settings.service],
                          **({"planning_slas_ms": slas} if len(slas) > 1 else {}),
                          solve_ms=(time.perf_counter() - t0) * 1000.0,
                          changed=changed)
        self._set_desired(target, pinned=forced is not None)

    def _consolidate(self, plan: Plan) -> Plan:
        """`plan` with the split GPUs that plans have left idle for `merge_idle_after_s` merged back
        into one instance (controller/planning/consolidation.py). One whose slices other Ray work
        has borrowed, or whose node did not say, waits: the merge would destroy a slice in use."""
        since, before = (self.desired.idle_since, self.desired.plan) if self.desired else ({}, None)
        now, after = self.wall_clock(), self.settings.merge_idle_after_s
        c = merge_idle(plan, since, now, after, keep=self._held, before=before)
        blocked = self._merge_blockers(set(c.merged)) if c.merged else {}
        for gid, why in blocked.items():
            self.events.event("consolidate", f"{gid} split and idle for {c.merged[gid]:.0f} s, but {'; '.join(why)}: "
                                             "merging it once its slices are free", gpu=gid, idle_s=c.merged[gid],
                              waiting_for=why)
        if blocked:
            c = merge_idle(plan, since, now, after, keep={*self._held, *blocked}, before=before)
        for gid, idle_s in c.merged.items():
            self.events.event("consolidate", f"{gid} split and idle for {idle_s:.0f} s: merging it back into one "
                                             "whole-GPU instance", gpu=gid, idle_s=idle_s)
        return c.plan

    def _merge_blockers(self, gpu_ids: set[str]) -> dict[str, list[str]]:
        """Of `gpu_ids`, those that must not be merged yet -> why: a slice leased by other Ray work
        (gpu_node/free_capacity.py lends the slices no plan uses; not a Clover replica's or a stale
        lease), or a node that did not report its GPUs or leases (unknown is not free)."""
        fleet = self.reconciler.fleet
        try:
            view, leases = fleet.observe(), fleet.leases()
        except Exception as exc:  # noqa: BLE001 - e.g. an agent of another version: wait, do not merge blind
            return {gid: [f"the fleet could not be asked ({type(exc).__name__}: {exc})"] for gid in gpu_ids}
        out: dict[str, list[str]] = {}
        at: dict[tuple[str, int], str] = {}
        for gid in gpu_ids:
            state = view.gpus.get(gid)
            if state is None or state.handle.node not in leases:
                out[gid] = [f"its node did not report its {'GPUs' if state is None else 'leases'}"]
            else:
                at[(state.handle.node, state.handle.index)] = gid
        for node, records in leases.items():
            for x in records:
                gid = at.get((node, x.gpu))
                if gid is not None and not x.stale and not x.owner.startswith(REPLICA_PREFIX):
                    out.setdefault(gid, []).append(f"other Ray work uses a slice ({x.owner})")
        return out

    @property
    def held_gpus(self) -> list[str]:
        """GPUs whose change could be made neither with the capacity there was nor with a bridge:
        the plans keep their layouts for a while (controller/loop/bridge.py)."""
        return sorted(self._held)

    @property
    def pinned(self) -> bool:
        """An operator forced the current plan: only the timer or a config change re-plans."""
        return self.desired is not None and self.desired.pinned

    @property
    def _held(self) -> dict[str, int]:
        """GPUs whose step could not be made -> timer intervals they keep their layout (persisted)."""
        return self.desired.held if self.desired else {}

    def _set_held(self, held: dict[str, int]) -> None:
        if self.desired is not None and held != self.desired.held:
            self.desired = replace(self.desired, held=held)
            self.store.save(self.desired)

    def _set_desired(self, plan: Plan, pinned: bool = False) -> None:
        """`plan` becomes the desired state, with the consolidation's idle clocks after it (whatever
        set it: a re-plan, an operator's forced plan, a rollback)."""
        s = self.settings
        base = self.desired or DesiredState(0, None, s.lam, s.sla, self.rate_rps, time.time())
        clocks = idle_clocks(plan, base.idle_since, self.wall_clock(), keep=self._held, before=base.plan)
        self.desired = replace(base.with_plan(plan, dict(self.demand.rates), pinned), lam=s.lam, sla_ms=s.sla,
                               idle_since=clocks)
        self.store.save(self.desired)

    # -- converging -------------------------------------------------------------------------------
    def _count_applied(self, report: ReconcileReport) -> None:
        """The metrics of what this tick applied, per service (`ReconcileReport.applied_by_service`)."""
        for name, (layouts, swaps) in report.applied_by_service(self.workload.names[0]).items():
            self.totals.plan_applied(name, layout_changes=layouts, variant_swaps=swaps)

    def reconcile(self) -> ReconcileReport:
        plan_id = self.desired.version if self.desired else 0
        report = self.reconciler.reconcile(self.plan, self._ctx(), plan_id)
        self.capacity = report.capacity
        done = [g for g, o in report.outcomes.items() if o is StepOutcome.DONE]
        self.stats.reconfigurations += len(done)
        if report.layout_changes or report.variant_swaps:
            self._count_applied(report)
        self.stats.rollbacks += sum(1 for o in report.outcomes.values()
                                    if o in (StepOutcome.ROLLED_BACK, StepOutcome.FAILED))
        if report.reverted and self.plan is not None:  # what runs after a rollback is what we now want
            reverted = tuple(report.reverted.get(g.gpu_id, g) for g in self.plan.gpus)
            self._set_desired(replace(self.plan, gpus=reverted), pinned=self.pinned)
        if report.held:  # the rest of the plan was sized with those GPUs changed: re-plan around them
            self._set_held({**self._held, **dict.fromkeys(report.held, self.settings.hold_intervals)})
            if not self.pinned:
                self._replan_now = self._replan_now or "held"
        if set(report.serving_gpus) != set(self.gpus):
            gone, new = set(self.gpus) - set(report.serving_gpus), set(report.serving_gpus) - set(self.gpus)
            self.events.event("fleet", f"GPUs changed: lost {sorted(gone)}, found {sorted(new)}; re-planning",
                              lost=sorted(gone), found=sorted(new))
            self.gpus = dict(report.serving_gpus)
            self._set_held({})  # a GPU that joined may have room to bridge what could not be done
            self._replan_now = "fleet"
        if any(o is StepOutcome.LOST for o in report.outcomes.values()):
            self._replan_now = "fleet"
        return report

    def running(self) -> list[GpuPlan]:
        """What runs now, per GPU (for accounting)."""
        view = self.reconciler.fleet.observe()
        specs = list(self.routes.book.specs.values())
        return [actual_gpu_plan(g, specs) for g in view.gpus.values()]

    # -- accounting -------------------------------------------------------------------------------
    def account(self) -> IntervalResult:
        result = self.accounting.account(self.running(), self.carbon_now, self.settings.pue, self.slas(),
                                         self.workload.shares(tuple(self.gpus.items()), self.demand.rates))
        return result

    def _check_triggers(self) -> None:
        """Load left the band, or overload: the planned rates follow, and maybe a re-plan now."""
        predicted = self.plan.predicted.p95_ms if self.plan is not None else 0.0
        sized = self.desired.sized_rates(self.workload.names) if self.desired else None
        reason = self.demand.check(sized, self.slas(), self.pinned, predicted)
        if reason and (self._replan_now is None or reason == "overload"):
            self._replan_now = reason

    # -- operator commands --------------------------------------------------------------------------
    def handle(self, commands: list[Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, ConfigCommand):
                for name in [cmd.service] if cmd.service else self.workload.names:
                    now = self.settings.for_service(name)
                    self.settings = self.settings.with_service(
                        name, lam=now.lam if cmd.lam is None else cmd.lam,
                        sla_ms=now.sla_ms if cmd.sla_ms is None else cmd.sla_ms)
                self.workload = Workload.of(self.settings, self.services, self.perf)
                self.events.event("config", f"λ={self.settings.lam}, SLA {self.settings.sla} ms (from POST /v1/config)"
                                  + (f" for {cmd.service}" if cmd.service else ""),
                                  lam=self.settings.lam, sla_ms=self.settings.sla, service=cmd.service)
                self._replan_now = "config"
            elif isinstance(cmd, PlanCommand):
                self._forced = cmd.plan
                self._replan_now = "forced"

    def handle_commands(self, timeout_s: float = 0.0) -> None:
        self.handle(self.bus.wait_commands(timeout_s))

    # -- status --------------------------------------------------------------------------------------
    def publish_status(self) -> None:
        for name, sla in self.slas().items():
            self.totals.set_sla(name, sla / 1000.0)
        self.totals.set_replicas({n: ReplicaPlacement(s.service, s.gpu_id, s.slice_id, s.variant)
                                  for n, s in self.routes.book.specs.items()})
        self.bus.set_status(status_doc(self), self.totals.snapshot())

    # -- driving it ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Adopt what runs (a restart) or plan and deploy the first plan; accounting starts afterwards."""
        self.handle_commands()
        self.carbon.read()
        self.reconcile()  # adopt and route what already runs before anything changes
        if self.plan is None:
            self.replan("start")
            self.reconcile()
        self.routes.wait_acknowledged()  # every ingress routes by the first table before load may come
        self.publish_status()
        self.accounting.reset()
        self.demand.reset()

    def tick(self) -> None:
        """One whole interval: account, commands, carbon, re-plan, converge, publish."""
        self.account()
        self.handle_commands()
        self.carbon.read()
        self._set_held({g: n - 1 for g, n in self._held.items() if n > 1})
        self.replan()
        self._replan_now = None
        self.reconcile()
        self.publish_status()

    def step_once(self) -> None:
        """Between intervals: load, overload, converge, publish (every `reconcile_every_s`)."""
        self._check_triggers()
        if self._replan_now:
            reason, self._replan_now = self._replan_now, None
            self.replan(reason)
        self.reconcile()
        self.publish_status()

    def run(self, duration_s: float | None = None) -> None:
        """Until `stop()` (or `duration_s`), on the loop's two clocks (controller/loop/driver.py)."""
        drive(self, self._stop, duration_s)

    def stop(self) -> None:
        self._stop.set()

    def finish(self) -> None:
        """Account for the last partial interval."""
        self.account()
        self.publish_status()
