"""The control loop: read carbon, re-plan, and move the running service to the new plan without
dropping a request (make-before-break, one GPU at a time).

Layout of this module: pure decisions first (what changes on a GPU, whether the rest of the
service can carry the load while it changes, what the traffic shares are), testable without
Ray; then `ControlLoop`, the adapter that carries the decisions out through the node agents
(MIG), Serve (replicas) and the ingress (router shares, draining).

One GPU step, in order:
 1. start and warm the replicas that need no MIG change (a new variant on a kept slice) with
    share 0;
 2. check the replicas that stay up can carry the current rate within the SLA; if not, the
    step is deferred (other GPUs first), then skipped and logged;
 3. move traffic off the replicas that go away (router shares), drain their in-flight requests,
    stop them;
 4. destroy/create MIG instances through the node agent;
 5. start and warm the replicas on the new slices; move traffic on.
A failed step rolls the GPU back to its previous layout and replicas (logged); a node agent that
dies is logged, its GPUs leave the plan, and the rest re-plans.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from controller.accounting.runlog import RunLog
from controller.planning.plan import (
    GpuChange,
    GpuPlan,
    Plan,
    SliceAssignment,
    diff_gpu,
    plan_changed,
    slice_key,
)

log = logging.getLogger(__name__)


# ---- pure decisions --------------------------------------------------------------------------
def order_changes(changes: list[GpuChange], capacity_lost: Callable[[GpuChange], float]) -> list[GpuChange]:
    """Cheapest first: the GPU whose step takes the least capacity offline goes first, so the
    steps that need most headroom run when the earlier ones have already added capacity."""
    return sorted((c for c in changes if not c.is_noop), key=lambda c: (capacity_lost(c), c.gpu_id))


RATE_WINDOW = 3  # intervals of measured load the next plan must carry


def planning_rate(expected_rps: float, recent_rps: Sequence[float]) -> float:
    """The rate the next plan is sized for: the peak of the last few intervals, never below
    the operator's expected rate (`--rate`).

    Capacity goes up as soon as load rises but comes down only once a whole window was
    quieter, and a partial interval (load that started mid-interval) never shrinks it: sizing
    to one low reading would turn the next burst away with 503s.
    """
    return max([expected_rps, *recent_rps])


def enough_capacity(remaining_rps: float, rate_rps: float, headroom: float) -> bool:
    """May a step take replicas offline? Only if what stays up carries rate × headroom within the SLA."""
    return remaining_rps >= rate_rps * headroom


# ---- the adapter -------------------------------------------------------------------------------
@dataclass
class LoopSettings:
    service: str
    lam: float
    sla_ms: float | None  # None: Base's p95 at the expected rate (Clover's SLA)
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
    replica_timeout_s: float = 120.0
    threads: int = 1
    weights_dir: str | None = None
    min_rate_rps: float = 1.0
    # Hours of carbon forecast handed to the planner: a new plan is adopted only if it pays back
    # its reconfiguration cost over them (controller/planning/planner.py). 0: re-plan on the current value.
    forecast_hours: int = 6


@dataclass
class GpuHandle:
    """Where a plan GPU lives."""

    gpu_id: str
    node: str
    index: int
    gpu_type: str


@dataclass
class _Running:
    """One running replica."""

    spec: Any  # controller.serving.replica.ReplicaSpec
    assignment: SliceAssignment
    gpu_id: str


@dataclass
class LoopStats:
    reconfigurations: int = 0
    mig_ops: int = 0
    skipped_steps: int = 0
    rollbacks: int = 0
    intervals: list[dict[str, Any]] = field(default_factory=list)


class ControlLoop:
    """Carries plans out on the cluster; `tick()` is one re-plan interval, `run()` loops."""

    def __init__(self, settings: LoopSettings, *, runlog: RunLog, carbon: Any, agents: dict[str, Any],
                 ingress: Any, perf: Any | None = None, accountant: Any | None = None,
                 on_interval: Callable[[dict[str, Any]], None] | None = None) -> None:
        from configs import load_services
        from controller.accounting.attribution import Accountant
        from controller.accounting.metrics import CloverMetrics
        from models.performance import PerformanceModel

        self.s = settings
        self.log = runlog
        self.carbon = carbon
        self.agents = dict(agents)
        self.ingress = ingress
        self.perf = perf or PerformanceModel.default()
        self.service = load_services().get(settings.service)
        self.on_interval = on_interval
        self.stats = LoopStats()
        self.gpus: dict[str, GpuHandle] = {}
        self.slice_info: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}  # gpu_id -> placement -> slice
        self.running: dict[str, GpuPlan] = {}
        self.replicas: dict[str, _Running] = {}  # app name -> replica
        self.plan: Plan | None = None
        self.rate_rps = settings.rate_rps
        self._recent_rates: deque[float] = deque(maxlen=RATE_WINDOW)
        self.carbon_now = 0.0
        self._stop = threading.Event()
        self._forced: Plan | None = None
        self._last_shares: dict[str, float] = {}
        self._discover()
        gpu_list = [(g.gpu_id, g.gpu_type) for g in self.gpus.values()]
        self.accountant = accountant or Accountant(self.service, dict(gpu_list), self.perf)
        self.metrics = CloverMetrics(settings.service)
        if settings.sla_ms is None:
            from controller.planning.model import base_p95_ms

            self.s.sla_ms = base_p95_ms(self.service, gpu_list, self.perf, settings.rate_rps)
        self.log.event("start", f"controller for {settings.service}: λ={settings.lam}, SLA {self.s.sla_ms:.1f} ms, "
                                f"{len(gpu_list)} GPUs on {len(self.agents)} nodes",
                       service=settings.service, lam=settings.lam, sla_ms=self.s.sla_ms,
                       carbon_source=getattr(carbon, "name", type(carbon).__name__), gpus=gpu_list)

    # -- cluster discovery ------------------------------------------------------------------------
    def _discover(self) -> None:
        import ray

        for node, agent in list(self.agents.items()):
            try:
                info = ray.get(agent.info.remote(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - an agent that cannot answer is a lost node
                self._lose_node(node, f"agent did not answer info(): {exc}")
                continue
            for g in info.gpus:
                if not g.enabled:
                    self.log.event("error", f"{g.gpu_id}: {g.partitioning.upper()} not available (MIG mode off or "
                                            "MPS daemon down; see `gpu-node setup`); GPU not used",
                                   where="discover", error=f"{g.partitioning} disabled")
                    continue
                self.gpus[g.gpu_id] = GpuHandle(g.gpu_id, node, g.index, g.gpu_type)
                self.slice_info[g.gpu_id] = {(s.profile, s.start): s for s in g.slices}

    def _refresh_slices(self, gpu_id: str) -> None:
        import ray

        h = self.gpus[gpu_id]
        info = ray.get(self.agents[h.node].info.remote(), timeout=30)
        for g in info.gpus:
            if g.gpu_id == gpu_id:
                self.slice_info[gpu_id] = {(s.profile, s.start): s for s in g.slices}

    def _lose_node(self, node: str, why: str) -> None:
        self.agents.pop(node, None)
        lost = [gid for gid, h in self.gpus.items() if h.node == node]
        for gid in lost:
            self.gpus.pop(gid, None)
        self.log.event("error", f"node agent {node} lost ({why}); its GPUs {lost} leave the plan, serving on the rest",
                       where=f"agent {node}", error=why)

    def _ingress(self, method: str, *args: Any) -> Any:
        """Call the ingress's control-plane method; bounded, so a dead ingress cannot hang the loop."""
        return getattr(self.ingress, method).remote(*args).result(timeout_s=self.s.drain_timeout_s + 60.0)

    # -- model helpers ---------------------------------------------------------------------------
    def _problem(self, rate: float, ci: float, current: Plan | None = None) -> Any:
        from controller.planning.model import PlanningProblem

        gpus = tuple(sorted((g.gpu_id, g.gpu_type) for g in self.gpus.values()))
        return PlanningProblem(self.service, gpus, self.perf, max(rate, self.s.min_rate_rps), self.s.sla_ms,
                               lam=self.s.lam, carbon_intensity=ci, pue=self.s.pue, current=current,
                               variants=self.s.variants)

    def _rmax(self, gpu_type: str, s: SliceAssignment, sla_factor: float = 1.0) -> float:
        """Largest rate the replica carries with predicted p95 <= SLA × sla_factor."""
        from controller.planning.model import column_of

        problem = self._problem(self.rate_rps, self.carbon_now)
        return column_of(problem.with_(sla_ms=self.s.sla_ms * sla_factor), gpu_type, s).rmax_rps

    def _gpu_type_of(self, gpu_id: str) -> str:
        h = self.gpus.get(gpu_id)
        return h.gpu_type if h else self.running[gpu_id].gpu_type

    def _transition_capacity(self, names: list[str]) -> float:
        """What `names` carry within the transition SLA (transition_sla_factor × SLA)."""
        return sum(self._rmax(self._gpu_type_of(self.replicas[n].gpu_id), self.replicas[n].assignment,
                              self.s.transition_sla_factor) for n in names)

    # -- replicas and traffic ----------------------------------------------------------------------
    def _spec(self, gpu_id: str, s: SliceAssignment) -> Any:
        from controller.serving.replica import ReplicaSpec
        from mig.placement import compute_slices_of

        h = self.gpus[gpu_id]
        sl = self.slice_info[gpu_id][(s.placement.profile, s.placement.start)]
        v = self.service.variant(s.variant)
        return ReplicaSpec(service=self.service.name, variant=v.name, variant_key=v.profile_key,
                           input=self.service.input, batch=s.batch, node=h.node, gpu=h.index, gpu_id=gpu_id,
                           gpu_type=h.gpu_type, profile=s.placement.profile, start=s.placement.start,
                           compute_slices=compute_slices_of(s.placement.profile), gi_id=sl.gi_id,
                           mig_uuid=sl.uuid, execution=self.s.execution, threads=self.s.threads,
                           weights_dir=self.s.weights_dir)

    def _start(self, gpu_id: str, slices: tuple[SliceAssignment, ...]) -> list[str]:
        """Deploy and warm replicas (share 0) and register them with the router."""
        import ray

        from controller.serving.replica import deploy_replicas, stop_replicas

        if not slices:
            return []
        specs = [self._spec(gpu_id, s) for s in slices]
        for sp in specs:
            self.log.event("replica", f"{sp.app_name} starting", gpu=gpu_id, slice=sp.slice_id,
                           variant=sp.variant, state="starting")
        deploy_replicas(specs, timeout_s=self.s.replica_timeout_s)
        h = self.gpus[gpu_id]
        routes = [{"name": sp.app_name, "variant": sp.variant, "max_queue": self._queue_bound(sp)} for sp in specs]
        try:
            self._ingress("add_routes", routes)  # the router knows them before the loop counts on them
        except Exception:
            stop_replicas([sp.app_name for sp in specs])
            raise
        for sp, s in zip(specs, slices):
            self.replicas[sp.app_name] = _Running(sp, s, gpu_id)
            ray.get(self.agents[h.node].acquire_lease.remote(h.index, sp.gi_id, sp.app_name), timeout=30)
            self.log.event("replica", f"{sp.app_name} up", gpu=gpu_id, slice=sp.slice_id, variant=sp.variant,
                           state="up")
        return [sp.app_name for sp in specs]

    def _queue_bound(self, spec: Any) -> int:
        """Requests a replica may hold before a new one would miss the SLA (router admission)."""
        from controller.serving.router import queue_bound

        tput = self.perf.throughput_rps(spec.variant_key, spec.gpu_type, spec.compute_slices, spec.batch)
        return queue_bound(tput, self.s.sla_ms, spec.batch)

    def _stop_replicas(self, names: list[str]) -> None:
        """Drain (no new traffic, wait for in-flight) and delete replicas; release their slices."""
        import ray

        from controller.serving.replica import stop_replicas

        if not names:
            return
        self._ingress("drain", names)
        for n in names:
            r = self.replicas[n]
            self.log.event("replica", f"{n} draining", gpu=r.gpu_id, slice=r.spec.slice_id,
                           variant=r.spec.variant, state="draining")
        left = self._ingress("wait_drained", names, self.s.drain_timeout_s)
        if left:
            self.log.event("error", f"{left} requests still in flight after {self.s.drain_timeout_s}s drain",
                           where="drain", error="drain timeout")
        stop_replicas(names)
        self._ingress("remove_routes", names)
        for n in names:
            r = self.replicas.pop(n)
            h = self.gpus.get(r.gpu_id)
            if h is not None:
                try:
                    ray.get(self.agents[h.node].release_lease.remote(h.index, r.spec.gi_id, n), timeout=30)
                except Exception as exc:  # noqa: BLE001 - the agent may be gone; the replica is stopped anyway
                    log.warning("release of %s failed: %s", n, exc)
            self.log.event("replica", f"{n} down", gpu=r.gpu_id, slice=r.spec.slice_id, variant=r.spec.variant,
                           state="down")

    def _set_shares(self, serving: list[str]) -> None:
        """Shares over the given replicas: the planner's optimal routing at the current rate, or
        (too little capacity for that) proportional to each replica's SLA capacity."""
        from controller.planning.model import route

        if not serving:
            return
        reps = [(self._gpu_type_of(self.replicas[n].gpu_id), self.replicas[n].assignment) for n in serving]
        shares = route(self._problem(self.rate_rps, self.carbon_now), reps, self.carbon_now)
        if shares is None or sum(shares) <= 0:
            shares = [self._rmax(t, s) for t, s in reps]
        if sum(shares) <= 0:  # no replica meets the SLA at any rate: spread evenly
            shares = [1.0] * len(serving)
        total = sum(shares)
        table = {n: float(x) / total for n, x in zip(serving, shares)}
        if table == self._last_shares:
            return
        self._last_shares = table
        self._ingress("set_shares", table)
        self.log.event("shares", f"traffic over {sum(1 for x in table.values() if x > 0)} replicas",
                       shares={n: round(x, 4) for n, x in table.items()})

    # -- applying a plan -------------------------------------------------------------------------
    def apply(self, target: Plan) -> Plan:
        """Move the service to `target`, one GPU at a time; returns what is actually running."""
        olds = dict(self.running)
        changes = [diff_gpu(olds.get(g.gpu_id), g) for g in target.gpus if g.gpu_id in self.gpus]
        lost = lambda c: sum(self._rmax(self._gpu_type_of(c.gpu_id), s) for s in c.stop)  # noqa: E731
        pending = order_changes(changes, lost)
        targets = {g.gpu_id: g for g in target.gpus}
        deferred_once: set[str] = set()
        while pending:
            c = pending.pop(0)
            status = self._apply_gpu(c, olds.get(c.gpu_id), targets[c.gpu_id])
            if status == "deferred":
                if c.gpu_id in deferred_once or not pending:
                    self.stats.skipped_steps += 1
                    self.log.event("error", f"{c.gpu_id}: skipped, the other replicas cannot carry "
                                            f"{self.rate_rps:.1f} req/s while it changes; kept as is",
                                   where=f"apply {c.gpu_id}", error="not enough capacity")
                else:
                    deferred_once.add(c.gpu_id)
                    pending.append(c)
        # The GPUs of nodes lost meanwhile: their replicas go last, once the rest carries the load.
        orphans = [n for n, r in self.replicas.items() if r.gpu_id not in self.gpus]
        if orphans:
            self._stop_replicas(orphans)
        for gid in [g for g in self.running if g not in self.gpus]:
            self.running.pop(gid)
        self._set_shares(list(self.replicas))
        return replace(target, gpus=tuple(self.running[g] for g in sorted(self.running)))

    def _apply_gpu(self, c: GpuChange, old: GpuPlan | None, new: GpuPlan) -> str:
        """One GPU step; returns 'done', 'deferred', 'rolled_back' or 'lost'."""
        from ray.exceptions import RayActorError

        h = self.gpus[c.gpu_id]
        stop_names = [n for n, r in self.replicas.items()
                      if r.gpu_id == c.gpu_id and slice_key(r.assignment) in {slice_key(s) for s in c.stop}]
        try:
            started = self._start(c.gpu_id, c.start_kept)  # make before break, where no MIG op is needed
            staying = [n for n in self.replicas if n not in stop_names]
            if stop_names and not enough_capacity(self._transition_capacity(staying), self.rate_rps, self.s.headroom):
                self._stop_replicas(started)  # undo: this step waits for the others
                return "deferred"
            self._set_shares(staying)
            self._stop_replicas(stop_names)
            if c.layout_changes:
                self._mig(h, new)
            self._start(c.gpu_id, c.start_new)
        except RayActorError as exc:  # the node's GPUs leave the plan; apply() stops their replicas last
            self._lose_node(h.node, f"died during re-partition of {c.gpu_id}: {exc}")
            return "lost"
        except Exception as exc:  # noqa: BLE001 - any failed step rolls back to a serving state
            self.log.event("error", f"{c.gpu_id}: step failed ({exc}); rolling back to the previous layout",
                           where=f"apply {c.gpu_id}", error=str(exc))
            self.stats.rollbacks += 1
            self._rollback(c.gpu_id, old)
            return "rolled_back"
        self.running[c.gpu_id] = new
        self.stats.reconfigurations += 1
        self._set_shares(list(self.replicas))
        return "done"

    def _mig(self, h: GpuHandle, new: GpuPlan) -> None:
        import ray

        ops = ray.get(self.agents[h.node].apply_layout.remote(h.index, list(new.layout)), timeout=300)
        for op in ops:
            self.stats.mig_ops += 1
            self.log.event("mig_op", f"{op.op} {op.profile}@{op.start} on {h.gpu_id} "
                                     f"{'ok' if op.ok else 'FAILED'} in {op.duration_s:.2f}s", **asdict(op))
        self._refresh_slices(h.gpu_id)
        bad = [op for op in ops if not op.ok]
        if bad:
            raise RuntimeError(f"MIG {bad[0].op} {bad[0].profile}@{bad[0].start} failed: {bad[0].error}")

    def _rollback(self, gpu_id: str, old: GpuPlan | None) -> None:
        """Back to the previous layout and replicas of one GPU; if even that fails, leave it empty."""
        h = self.gpus.get(gpu_id)
        mine = [n for n, r in self.replicas.items() if r.gpu_id == gpu_id]
        try:
            self._stop_replicas([n for n in mine if old is None or slice_key(self.replicas[n].assignment)
                                 not in {slice_key(s) for s in old.slices}])
            if old is not None and h is not None:
                self._mig(h, old)
                have = {slice_key(r.assignment) for r in self.replicas.values() if r.gpu_id == gpu_id}
                self._start(gpu_id, tuple(s for s in old.slices if s.variant and slice_key(s) not in have))
                self.running[gpu_id] = old
        except Exception as exc:  # noqa: BLE001
            self.log.event("error", f"{gpu_id}: rollback failed ({exc}); GPU left out, serving on the rest",
                           where=f"rollback {gpu_id}", error=str(exc))
            self.running.pop(gpu_id, None)
        self._set_shares(list(self.replicas))

    # -- one interval ------------------------------------------------------------------------------
    def read_carbon(self) -> float:
        reading = self.carbon.current()
        self.carbon_now = float(reading.value_gco2_per_kwh)
        self.metrics.observe_carbon(reading)
        self.log.event("carbon", f"carbon intensity {self.carbon_now:.0f} gCO2/kWh", value=self.carbon_now,
                       source=reading.source, stale=reading.stale)
        return self.carbon_now

    def _forecast(self) -> tuple[float, ...]:
        try:
            return tuple(r.value_gco2_per_kwh for r in self.carbon.forecast(self.s.forecast_hours))
        except Exception as exc:  # noqa: BLE001 - no forecast: plan on the current value alone
            log.info("no carbon forecast (%s); planning without switching cost", exc)
            return ()

    def replan(self) -> None:
        from controller.planning.planner import InfeasibleError, solve

        if not self.gpus:
            self.log.event("error", "no GPU left to plan for", where="replan", error="no gpus")
            return
        forced, self._forced = self._forced, None
        t0 = time.perf_counter()
        problem = self._problem(self.rate_rps * self.s.headroom, self.carbon_now, self.plan)
        if self.s.forecast_hours and self.plan is not None:
            problem = problem.with_(forecast=self._forecast())
        try:
            target = forced or solve(problem)
        except InfeasibleError as exc:
            self.log.event("error", f"no plan meets the SLA, keeping the current one: {exc}", where="replan",
                           error=str(exc))
            return
        solve_ms = (time.perf_counter() - t0) * 1000.0
        target = Plan(target.service, tuple(g for g in target.gpus if g.gpu_id in self.gpus), target.rate_rps,
                      target.carbon_intensity, target.predicted, target.solve_ms)
        changed = plan_changed(self.plan, target)
        p = target.predicted
        self.log.event("plan", f"{'forced ' if forced else ''}plan {'changes' if changed else 'unchanged'}: "
                               f"{_describe(target)}", plan=target.to_json(),
                       predicted_carbon_g_per_h=p.carbon_g_per_h, predicted_accuracy=p.accuracy,
                       predicted_p95_ms=p.p95_ms, solve_ms=solve_ms, changed=changed)
        if changed:
            nodes_before = set(self.agents)
            self.plan = self.apply(target)
            self.metrics.plan_changed()
            if set(self.agents) != nodes_before and self.gpus:
                self.replan()  # a node was lost mid-way: plan again for the GPUs that are left
        else:
            self.plan = target
            self._set_shares(list(self.replicas))

    def account(self) -> dict[str, Any]:
        """Measured energy, carbon, accuracy, p95 and requests of the interval that just ended."""
        import ray

        from controller.accounting.attribution import SliceActivity
        from mig.placement import compute_slices_of

        traffic = self._ingress("take_interval")
        energy: dict[str, float | None] = {}
        busy: dict[str, dict[str, float]] = {}
        estimated = False
        for node, agent in list(self.agents.items()):
            try:
                reading = ray.get(agent.interval_energy.remote(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - a dead agent: logged, its GPUs leave the plan
                self._lose_node(node, f"energy read failed: {exc}")
                continue
            energy.update(reading.energy_j)
            busy.update(reading.busy_s)
            estimated |= reading.estimated
        # Attribution follows the layout running now (slices removed mid-interval only lose their
        # share of the *attribution*; the GPU's measured energy is counted in full).
        activity = [
            SliceActivity(g.gpu_id, f"{s.placement.profile}@{s.placement.start}",
                          compute_slices_of(s.placement.profile), s.variant,
                          busy.get(g.gpu_id, {}).get(f"{s.placement.profile}@{s.placement.start}", 0.0), s.batch)
            for g in self.running.values() if g.gpu_id in self.accountant.gpus for s in g.slices
        ]
        dur = max(traffic["duration_s"], 1e-3)
        acct = self.accountant.record_interval(
            dur, {k: v for k, v in energy.items() if k in self.accountant.gpus}, activity, traffic["variants"],
            self.carbon_now, self.s.pue, p95_ms=traffic["p95_ms"] if traffic["requests"] else None,
            failed=traffic["failed"], estimated=estimated)
        rec = acct.event_fields()
        self.metrics.observe_interval(acct)
        self.stats.intervals.append(rec)
        self.log.event("interval", f"{acct.requests} requests, {acct.energy_j:.0f} J, {acct.carbon_g:.3f} g "
                                   f"(base {acct.baseline_carbon_g:.3f} g), p95 on slice {traffic['p95_ms']:.1f} ms "
                                   f"(SLA {self.s.sla_ms:.1f}), at ingress {traffic.get('ingress_p95_ms', 0.0):.1f} ms",
                       ingress_p95_ms=traffic.get("ingress_p95_ms"), **rec)
        # Offered load counts the requests turned away too, or saturation would hide demand.
        self._recent_rates.append((traffic["requests"] + traffic["failed"]) / dur)
        self.rate_rps = planning_rate(self.s.rate_rps, self._recent_rates)
        if self.on_interval:
            self.on_interval(acct)
        return rec

    def reset_interval(self) -> None:
        """Start a fresh accounting interval now (e.g. when load starts after the first deploy)."""
        import ray

        self._ingress("take_interval")
        for node, agent in list(self.agents.items()):
            try:
                ray.get(agent.interval_energy.remote(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - a dead agent: same handling as during accounting
                self._lose_node(node, f"energy read failed: {exc}")

    def publish_status(self) -> None:
        t = self.accountant.totals()
        totals = {"carbon_g": t.carbon_g, "baseline_carbon_g": t.baseline_carbon_g, "saved_pct": t.saved_pct,
                  "energy_j": t.energy_j, "requests": t.requests, "failed": t.failed, "accuracy": t.accuracy}
        status = {"plan": self.plan.to_json() if self.plan else None, "carbon_intensity": self.carbon_now,
                  "rate_rps": self.rate_rps, "sla_ms": self.s.sla_ms, "lambda": self.s.lam,
                  "emissions": totals, "reconfigurations": self.stats.reconfigurations}
        self._ingress("set_status", status, self.metrics_text())

    def metrics_text(self) -> str:
        return self.metrics.render().decode()

    def handle_commands(self) -> None:
        for cmd in self._ingress("take_commands"):
            if cmd["kind"] == "config":
                self.s.lam = cmd.get("lam", self.s.lam)
                if cmd.get("sla_ms", self.s.sla_ms) != self.s.sla_ms:
                    self.s.sla_ms = cmd["sla_ms"]  # admission follows the new SLA at once
                    self._ingress("set_bounds", {n: self._queue_bound(r.spec) for n, r in self.replicas.items()})
                self.log.event("config", f"λ={self.s.lam}, SLA {self.s.sla_ms} ms (from POST /v1/config)",
                               lam=self.s.lam, sla_ms=self.s.sla_ms)
            elif cmd["kind"] == "plan":
                self._forced = Plan.from_json(cmd["plan"])

    def tick(self, first: bool = False) -> None:
        if not first:
            self.account()
        self.handle_commands()
        self.read_carbon()
        self.replan()
        self.publish_status()

    def start(self) -> None:
        """First plan and deployment; accounting starts once it is serving."""
        self.tick(first=True)
        self.reset_interval()

    def run(self, duration_s: float | None = None) -> None:
        """Tick every `replan_every_s` until `stop()` (or `duration_s`); starts first if needed."""
        t_end = time.monotonic() + duration_s if duration_s else None
        if self.plan is None:
            self.start()
        while not self._stop.is_set():
            next_t = time.monotonic() + self.s.replan_every_s
            if t_end is not None and next_t > t_end:
                self._stop.wait(max(0.0, t_end - time.monotonic()))
                break
            if self._stop.wait(max(0.0, next_t - time.monotonic())):
                break
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - one bad tick (carbon API, timeout) must not stop serving
                log.exception("control-loop tick failed")
                self.log.event("error", f"tick failed, serving on the current plan: {type(exc).__name__}: {exc}",
                               where="tick", error=str(exc))

    def stop(self) -> None:
        self._stop.set()

    def finish(self) -> None:
        """Account for the last partial interval."""
        self.account()
        self.publish_status()


def _describe(plan: Plan) -> str:
    parts = []
    for g in plan.gpus:
        sl = ", ".join(f"{s.placement.profile}:{s.variant or '-'}" + (f"×b{s.batch}" if s.variant else "")
                       for s in g.slices)
        parts.append(f"{g.gpu_id}[{sl or 'idle'}]")
    return " ".join(parts)
