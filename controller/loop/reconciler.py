"""The reconciler: compare the desired plan with what actually runs, and converge — every tick.

Like a Kubernetes controller it keeps no memory of what it did: each tick it observes the node
agents (GPUs and slices), Serve (slice replicas) and the leases, then
 1. routes what runs: every running replica is routed (adopted — never restarted — if it matches
    the plan), a replica that is not running gets no traffic, and the routing table is
    republished (which also re-configures a restarted ingress replica or bus);
 2. stops replicas that can never serve again (deployment failed, slice destroyed under them);
 3. moves every GPU whose actual state differs from the desired one, make-before-break
    (controller/loop/rollout.py), cheapest step first; when no step moved and some wait for
    capacity, waiting changes nothing: one is bridged (controller/loop/bridge.py) and taken at
    once, or, with no room for a bridge, given up after `stuck_after_s` (its GPU is `held`);
 4. stops replicas no plan GPU wants any more (orphans), once the rest carries the load;
 5. releases slice leases of Clover replicas that no longer exist in Serve (other Ray work that
    borrowed a free slice holds its own lease, which lapses by itself if not renewed).
Before converging it claims, on every node, the slices the plan and the running replicas use; the
agents give the rest back to the Ray cluster (controller/loop/capacity.py).
So a restarted controller, a restarted ingress, a killed replica or a returning node agent all
end in the same converged state without a person stepping in.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from configs.cluster import REPLICA_PREFIX
from controller.loop.bridge import BridgeSlice, describe_bridge, plan_bridge, rooms_of
from controller.loop.capacity import CapacityLog, claims_of
from controller.loop.ports import EventSink, Fleet, ReplicaRuntime
from controller.loop.rollout import Rollout, StepContext, StepOutcome, leaving, one_line, order_changes
from controller.loop.routes import Routes
from controller.loop.view import FleetView, GpuState, ReplicaState, actual_gpu_plan, broken_replicas
from controller.planning.plan import GpuPlan, Plan, diff_gpu
from controller.serving.replica import ReplicaSpec
from gpu_node.records import Reservation

LEASE_SWEEP_EVERY = 5  # ticks between lease clean-ups (one call per agent)
GIVEN_UP = ("DEPLOY_FAILED", "UNHEALTHY")


@dataclass
class ReconcileReport:
    fleet: FleetView
    outcomes: dict[str, StepOutcome] = field(default_factory=dict)
    # GPUs whose desired state must follow what runs (rolled back, or held): this is what they run now
    reverted: dict[str, GpuPlan] = field(default_factory=dict)
    # GPUs whose step waited too long with no bridge: they keep their layout (gpu -> the short services)
    held: dict[str, tuple[str, ...]] = field(default_factory=dict)
    layout_changes: list[str] = field(default_factory=list)  # GPUs whose MIG layout changed this tick
    variant_swaps: list[str] = field(default_factory=list)  # GPUs that swapped variants on kept slices
    # per GPU changed this tick, the services whose replicas stopped or started there ("": the plan's one)
    services_changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    serving_gpus: dict[str, str] = field(default_factory=dict)  # gpu_id -> type: GPUs the next plan may use
    capacity: dict[str, Reservation] = field(default_factory=dict)  # node -> what it holds back and frees

    @property
    def converged(self) -> bool:
        return all(o is StepOutcome.DONE for o in self.outcomes.values())

    def applied_by_service(self, first: str) -> dict[str, tuple[dict[str, int], int]]:
        """What this tick applied, per service: (MIG layout changes per GPU, variant swaps). A
        changed GPU counts for each service whose replicas stopped or started on it (a service
        moved off it too; `first` when none did, or for the plan's one service), and each GPU's
        layout change is counted once, under the first service that claims it."""
        claims: dict[str, list[str]] = {}
        for gpu in (*self.layout_changes, *self.variant_swaps):
            for name in dict.fromkeys(s or first for s in self.services_changed.get(gpu, ())) or [first]:
                claims.setdefault(name, []).append(gpu)
        counted: set[str] = set()
        out: dict[str, tuple[dict[str, int], int]] = {}
        for name, changed in claims.items():
            layouts = {g: 1 for g in changed if g in self.layout_changes and g not in counted}
            counted.update(layouts)
            out[name] = (layouts, sum(g in self.variant_swaps for g in changed))
        return out


class Reconciler:
    def __init__(self, fleet: Fleet, runtime: ReplicaRuntime, routes: Routes, rollout: Rollout,
                 events: EventSink, clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.runtime = runtime
        self.routes = routes
        self.rollout = rollout
        self.events = events
        self._ticks = 0
        self.clock = clock
        self._waiting: dict[tuple[str, int], float] = {}  # (gpu, plan id) -> when its step began to wait
        self._bridged: set[tuple[str, int]] = set()  # (gpu, plan id) whose step was bridged once
        self._capacity = CapacityLog(events)

    def reconcile(self, desired: Plan | None, ctx: StepContext, plan_id: int = 0) -> ReconcileReport:
        self._ticks += 1
        view = self.fleet.observe()
        replicas = self.runtime.list()
        report = ReconcileReport(view)
        self._route_what_runs(replicas, ctx)
        unknown = [n for n, st in self.runtime.statuses().items() if n not in replicas and st in GIVEN_UP]
        if unknown:  # replicas whose spec cannot be read and that will not come up: nothing to adopt
            self.runtime.stop(unknown)
        broken = broken_replicas(view, replicas.values())
        if broken:
            self.events.event("error", f"{len(broken)} replicas cannot serve any more (deployment failed or slice "
                                       f"gone): {[r.name for r in broken]}; stopping them", where="reconcile",
                              error="broken replicas")
            self.rollout.stop_replicas([r.spec for r in broken], ctx)
            replicas = {n: r for n, r in replicas.items() if r not in broken}
        if desired is not None:
            report.capacity = self.fleet.claim(claims_of(desired, view, [r.spec for r in replicas.values()]))
            self._capacity.note(report.capacity)
            self._converge(desired, view, replicas, ctx, report, plan_id)
            self._stop_orphans(desired, view, ctx)
        if self._ticks % LEASE_SWEEP_EVERY == 1:
            self._sweep_leases()
        report.serving_gpus = self._serving_gpus(view, desired)
        return report

    # -- 1. routing follows what runs ---------------------------------------------------------------
    def _route_what_runs(self, replicas: dict[str, ReplicaState], ctx: StepContext) -> None:
        book = self.routes.book
        running = {n: r.spec for n, r in replicas.items() if r.running}
        for n in [n for n in book.specs if n not in running]:
            book.remove([n])  # gone or restarting: no traffic until it runs again
        for n, spec in running.items():
            if n not in book.specs:
                book.add(spec)  # adopted as it is: no restart
        self.routes.publish(ctx.workload, ctx.rates, ctx.carbon_intensity)

    # -- 3. GPUs towards the desired plan -------------------------------------------------------------
    def _converge(self, desired: Plan, view: FleetView, replicas: dict[str, ReplicaState], ctx: StepContext,
                  report: ReconcileReport, plan_id: int) -> None:
        specs = [r.spec for r in replicas.values()]
        steps = []
        for g in desired.gpus:
            gpu = view.gpus.get(g.gpu_id)
            if gpu is None or not gpu.enabled:
                continue  # its agent does not answer now: nothing can change there; what runs keeps serving
            c = diff_gpu(actual_gpu_plan(gpu, specs), g)
            if not c.is_noop:
                steps.append((c, gpu, g))
        lost = {c.gpu_id: sum(ctx.workload.model(s.service).rmax(gpu.handle.gpu_type, s) for s in c.stop)
                for c, gpu, _ in steps}
        by_id = {c.gpu_id: (gpu, g) for c, gpu, g in steps}
        deferred: list[str] = []
        for c in order_changes([c for c, _, _ in steps], lambda c: lost[c.gpu_id]):
            gpu, g = by_id[c.gpu_id]
            if self._step(gpu, [s for s in specs if s.gpu_id == c.gpu_id], g, ctx, report) is StepOutcome.DEFERRED:
                deferred.append(c.gpu_id)
                if (c.gpu_id, plan_id) not in self._waiting:
                    self._waiting[c.gpu_id, plan_id] = self.clock()
                    self.events.event("warning", f"{c.gpu_id}: waiting, the other replicas cannot carry "
                                                 f"{ctx.rate_rps:.1f} req/s while it changes; retrying every tick",
                                      where=f"apply {c.gpu_id}")
            specs = [s for s in specs if s.gpu_id != c.gpu_id] + [
                s for s in self.routes.book.specs.values() if s.gpu_id == c.gpu_id]
        if deferred and StepOutcome.DONE not in report.outcomes.values():
            self._unblock(deferred, desired, ctx, report, plan_id)
        self._waiting = {k: t for k, t in self._waiting.items() if k[1] == plan_id and k[0] in deferred}
        self._bridged = {k for k in self._bridged if k[1] == plan_id}

    def _step(self, gpu: GpuState, on_gpu: list[ReplicaSpec], g: GpuPlan, ctx: StepContext,
              report: ReconcileReport) -> StepOutcome:
        """One GPU's step, and what the report says of it."""
        c = diff_gpu(actual_gpu_plan(gpu, on_gpu), g)
        outcome = self.rollout.step(gpu, on_gpu, g, ctx)
        report.outcomes[g.gpu_id] = outcome
        if outcome is StepOutcome.DONE:
            (report.layout_changes if c.layout_changes else report.variant_swaps).append(g.gpu_id)
            report.services_changed[g.gpu_id] = tuple(sorted({s.service for s in (*c.stop, *c.starts)}))
        if outcome in (StepOutcome.ROLLED_BACK, StepOutcome.FAILED):
            now = self.fleet.observe().gpus.get(g.gpu_id)
            if now is not None:
                report.reverted[g.gpu_id] = actual_gpu_plan(now, self.routes.book.specs.values())
        return outcome

    def _unblock(self, deferred: list[str], desired: Plan, ctx: StepContext, report: ReconcileReport,
                 plan_id: int) -> None:
        """Nothing moved this tick, so waiting changes nothing. Bridge the first waiting step that
        can be bridged (once per plan) and take it at once; with no bridge, a step that has waited
        `stuck_after_s` gives up: its GPU keeps what runs, and the desired state follows
        (`report.held`, like a rollback), so the plan becomes reachable."""
        view = self.fleet.observe()
        specs = list(self.routes.book.specs.values())
        wanted = {g.gpu_id: g for g in desired.gpus}
        short: dict[str, dict[str, float]] = {}
        for gid in deferred:
            gpu = view.gpus.get(gid)
            if gpu is None:
                continue
            going = {s.app_name for s in leaving([s for s in specs if s.gpu_id == gid],
                                                 diff_gpu(actual_gpu_plan(gpu, specs), wanted[gid]))}
            staying = [s for s in self.routes.book.serving() if s.app_name not in going]
            losing = [s.service for s in specs if s.app_name in going]
            short[gid] = missing = ctx.workload.missing(staying, ctx.rates, losing)
            if not missing or (gid, plan_id) in self._bridged:
                continue
            bridge = plan_bridge(missing, rooms_of(view.gpus, specs, desired, gid), ctx.workload.offers,
                                 ctx.workload.transition_capacity)
            if bridge is not None:
                self._bridged.add((gid, plan_id))
                self._bridge_then_step(gid, missing, bridge, view, wanted[gid], ctx, report)
                return
        now = self.clock()
        for gid, missing in short.items():
            waited = now - self._waiting.get((gid, plan_id), now)
            if missing and waited >= ctx.workload.settings.stuck_after_s:
                services = tuple(missing)
                self.events.event("error", f"{gid}: cannot change without taking capacity from {', '.join(services)} "
                                           f"that no other replica can carry, and no GPU has room to bridge it; "
                                           f"waited {waited:.0f}s, keeping its current layout",
                                  where=f"apply {gid}", error="no capacity to bridge the step", gpu=gid,
                                  services=list(services))
                report.held[gid] = services
                report.reverted[gid] = actual_gpu_plan(view.gpus[gid], specs)

    def _bridge_then_step(self, gid: str, missing: dict[str, float], bridge: tuple[BridgeSlice, ...],
                          view: FleetView, g: GpuPlan, ctx: StepContext, report: ReconcileReport) -> None:
        """Start the bridge, then the step it was built for, in the same tick: a later tick would
        see the bridge as replicas the plan does not want and remove it first."""
        self.events.event("bridge", f"{gid}: {', '.join(missing)} would lose {sum(missing.values()):.1f} req/s "
                                    f"no other replica carries; bridging first: {describe_bridge(bridge)}",
                          gpu=gid, services=list(missing), gpus=sorted({b.gpu_id for b in bridge}),
                          replicas=describe_bridge(bridge))
        try:
            self.rollout.bridge(view.gpus, bridge, ctx)
        except Exception as exc:  # noqa: BLE001 - what started serves; the step keeps waiting
            self.events.event("error", f"{gid}: bridge failed ({one_line(exc)}); the step keeps waiting",
                              where=f"bridge {gid}", error=one_line(exc))
            return
        gpu = self.fleet.observe().gpus.get(gid)
        if gpu is not None:
            self._step(gpu, [s for s in self.routes.book.specs.values() if s.gpu_id == gid], g, ctx, report)

    # -- 4. replicas no plan GPU wants ------------------------------------------------------------------
    def _stop_orphans(self, desired: Plan, view: FleetView, ctx: StepContext) -> None:
        planned = {g.gpu_id for g in desired.gpus}
        orphans = [s for s in self.routes.book.specs.values() if s.gpu_id not in planned]
        if not orphans:
            return
        staying = [s for s in self.routes.book.serving() if s.gpu_id in planned]
        if not ctx.workload.short_of(staying, ctx.rates, [s.service for s in orphans]):
            self.rollout.stop_replicas(orphans, ctx)

    # -- 5. leases ------------------------------------------------------------------------------------------
    def _sweep_leases(self) -> None:
        alive = set(self.runtime.statuses())
        for node, leases in self.fleet.leases().items():
            dead = sorted({lease.owner for lease in leases
                           if lease.owner.startswith(REPLICA_PREFIX) and lease.owner not in alive})
            if dead:
                released = self.fleet.release_leases(node, dead)
                self.events.event("lease", f"released {len(released)} slice leases on {node} whose replicas no "
                                           f"longer exist: {dead}", node=node, owners=dead)

    def _serving_gpus(self, view: FleetView, desired: Plan | None) -> dict[str, str]:
        """GPUs the next plan may use: those whose agent answers (MIG on), plus planned GPUs whose
        agent is missing but whose replicas still serve (we keep them rather than move load)."""
        out = {gid: g.handle.gpu_type for gid, g in view.gpus.items() if g.enabled}
        if desired is not None:
            still = {s.gpu_id for s in self.routes.book.serving()}
            out.update({g.gpu_id: g.gpu_type for g in desired.gpus if g.gpu_id not in out and g.gpu_id in still})
        return out
