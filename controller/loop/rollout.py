"""Make-before-break: moving one GPU from what runs on it to what should, without dropping a request.

One GPU step, in order:
 1. start and warm the replicas that need no MIG change (a new variant on a kept slice), share 0;
 2. check the replicas that stay up carry the current rate within the transition SLA; if not, the
    step waits (`DEFERRED`): the reconciler tries again next tick, when other GPUs added capacity,
    or bridges the step when nothing else moves (controller/loop/bridge.py, `Rollout.bridge`);
 3. move traffic off the replicas that go away (a new routing table, confirmed by every ingress
    replica), wait until the replicas' own in-flight counts reach 0, stop them;
 4. destroy/create MIG instances through the node agent;
 5. start and warm the replicas on the new slices; move traffic on.
Every step is idempotent with respect to what runs — it starts from the observed GPU, not from a
remembered one — so a step cut short by a crash is finished by the next controller's reconciler.
A failed step rolls the GPU back to the layout and replicas it had (`ROLLED_BACK`); a node agent
that dies mid-step ends it (`LOST`), and its GPUs are handled by the reconciler.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from configs.schema import Service
from controller.loop.bridge import BridgeSlice
from controller.loop.ports import EventSink, Fleet, NodeLostError, ReplicaRuntime
from controller.loop.routes import Routes
from controller.loop.service_model import Workload
from controller.loop.settings import LoopSettings
from controller.loop.view import GpuState, actual_gpu_plan, assignment_of
from controller.planning.plan import GpuChange, GpuPlan, SliceAssignment, diff_gpu, slice_key
from controller.serving.replica import ReplicaSpec
from mig.placement import compute_slices_of
from mig.types import Layout, Placement, canonical

log = logging.getLogger(__name__)


class StepOutcome(Enum):
    DONE = "done"
    DEFERRED = "deferred"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # the rollback failed too: the GPU is in some serving-less state
    LOST = "lost"


def order_changes(changes: list[GpuChange], capacity_lost: Callable[[GpuChange], float]) -> list[GpuChange]:
    """Cheapest first: the GPU whose step takes the least capacity offline goes first, so the
    steps that need most headroom run when the earlier ones have already added capacity."""
    return sorted((c for c in changes if not c.is_noop), key=lambda c: (capacity_lost(c), c.gpu_id))


def leaving(on_gpu: list[ReplicaSpec], c: GpuChange) -> list[ReplicaSpec]:
    """The replicas among `on_gpu` (one GPU's) that its step `c` stops."""
    going = {slice_key(s) for s in c.stop}
    return [s for s in on_gpu if slice_key(assignment_of(s)) in going]


def replica_spec(service: Service, settings: LoopSettings, gpu: GpuState, a: SliceAssignment) -> ReplicaSpec:
    """What a replica of `a` on this GPU needs; the slice must exist on the GPU now."""
    sl = gpu.slice_at(a.placement)
    if sl is None:
        raise RuntimeError(f"{gpu.handle.gpu_id}: no slice {a.placement.profile}@{a.placement.start} to start "
                           f"{a.variant} on")
    v = service.variant(a.variant or "")
    h = gpu.handle
    return ReplicaSpec(service=service.name, variant=v.name, variant_key=v.profile_key, input=service.input,
                       batch=a.batch, node=h.node, gpu=h.index, gpu_id=h.gpu_id, gpu_type=h.gpu_type,
                       profile=a.placement.profile, start=a.placement.start,
                       compute_slices=compute_slices_of(a.placement.profile), gi_id=sl.gi_id,
                       device_env=dict(sl.env), execution=settings.execution, threads=settings.threads,
                       weights_dir=settings.weights_dir)


@dataclass
class StepContext:
    """What a step needs to know about the moment: the services' models and the load each must carry."""

    workload: Workload
    rates: Mapping[str, float]  # req/s by service name
    carbon_intensity: float

    @property
    def rate_rps(self) -> float:
        return sum(self.rates.values())


class Rollout:
    """Carries out GPU steps through the fleet (MIG), the replica runtime (Serve) and the routes."""

    def __init__(self, fleet: Fleet, runtime: ReplicaRuntime, routes: Routes, events: EventSink) -> None:
        self.fleet = fleet
        self.runtime = runtime
        self.routes = routes
        self.events = events
        self.mig_ops = 0
        self.layout_changes = 0
        self.variant_swaps = 0
        self._known: dict[str, ReplicaSpec] = {}  # specs of replicas this rollout may have to stop

    # -- one GPU ----------------------------------------------------------------------------------
    def step(self, gpu: GpuState, on_gpu: list[ReplicaSpec], desired: GpuPlan, ctx: StepContext) -> StepOutcome:
        """Move one GPU from what runs on it (`gpu`'s slices, the replicas `on_gpu`) to `desired`."""
        actual = actual_gpu_plan(gpu, on_gpu)
        c = diff_gpu(actual, desired)
        if c.is_noop:
            return StepOutcome.DONE
        self._known.update({s.app_name: s for s in on_gpu})
        stop_names = [s.app_name for s in leaving(on_gpu, c)]
        try:
            started = self._start(gpu, c.start_kept, ctx)  # make before break, where no MIG op is needed
            staying = [s for s in self.routes.book.serving() if s.app_name not in stop_names]
            losing = [s.service for s in on_gpu if s.app_name in stop_names]
            if ctx.workload.short_of(staying, ctx.rates, losing):
                self._stop(started, ctx)  # undo: this step waits for the others
                return StepOutcome.DEFERRED
            self._stop(stop_names, ctx)
            if c.layout_changes:
                gpu = self._mig(gpu, desired.layout)
            self._start(gpu, c.start_new, ctx)
        except NodeLostError as exc:
            self.events.event("error", f"node agent {gpu.handle.node} lost during the step of {gpu.handle.gpu_id}: "
                                       f"{one_line(exc)}", where=f"agent {gpu.handle.node}", error=one_line(exc))
            return StepOutcome.LOST
        except Exception as exc:  # noqa: BLE001 - any failed step rolls back to a serving state
            self.events.event("error", f"{gpu.handle.gpu_id}: step failed ({one_line(exc)}); rolling back to the "
                                       "previous layout", where=f"apply {gpu.handle.gpu_id}", error=one_line(exc))
            return self._rollback(gpu, actual, ctx)
        if c.layout_changes:
            self.layout_changes += 1
        else:
            self.variant_swaps += 1
        self.routes.publish(ctx.workload, ctx.rates, ctx.carbon_intensity)
        return StepOutcome.DONE

    def bridge(self, gpus: Mapping[str, GpuState], bridge: tuple[BridgeSlice, ...], ctx: StepContext) -> None:
        """Start a bridge's replicas (controller/loop/bridge.py), creating their slices first; they
        take traffic like any replica. Raises if a part fails: what started stays and serves, and
        the reconciler removes it like any replica the plan does not want."""
        for gid in dict.fromkeys(b.gpu_id for b in bridge):
            mine = [b for b in bridge if b.gpu_id == gid]
            gpu = gpus[gid]
            new = [b.assignment.placement for b in mine if b.create]
            if new:
                gpu = self._mig(gpu, canonical([*(Placement(s.profile, s.start) for s in gpu.slices), *new]))
            self._start(gpu, tuple(b.assignment for b in mine), ctx)

    # -- replicas -----------------------------------------------------------------------------------
    def _start(self, gpu: GpuState, slices: tuple[SliceAssignment, ...], ctx: StepContext) -> list[str]:
        """Deploy and warm replicas (share 0), let every ingress pick them up, then give them traffic."""
        if not slices:
            return []
        specs = [replica_spec(ctx.workload.model(s.service).service, ctx.workload.settings, gpu, s) for s in slices]
        for sp in specs:
            self.events.event("replica", f"{sp.app_name} starting", gpu=sp.gpu_id, slice=sp.slice_id,
                              variant=sp.variant, state="starting")
        self.runtime.deploy(specs, ctx.workload.settings.replica_timeout_s)
        for sp in specs:
            self.routes.book.add(sp, warming=True)
        self.routes.publish(ctx.workload, ctx.rates, ctx.carbon_intensity, wait=True)
        names = [sp.app_name for sp in specs]
        self.routes.book.serve(names)
        for sp in specs:
            self.events.event("replica", f"{sp.app_name} up", gpu=sp.gpu_id, slice=sp.slice_id, variant=sp.variant,
                              state="up")
        return names

    def _stop(self, names: list[str], ctx: StepContext) -> None:
        """Drain (no new traffic, wait for the replicas' in-flight requests) and delete replicas."""
        if not names:
            return
        specs = {n: self.routes.book.specs.get(n) or self._known[n] for n in names}
        self.routes.book.drain(names)
        self.routes.publish(ctx.workload, ctx.rates, ctx.carbon_intensity, wait=True)
        for n, sp in specs.items():
            self.events.event("replica", f"{n} draining", gpu=sp.gpu_id, slice=sp.slice_id, variant=sp.variant,
                              state="draining")
        timeout = ctx.workload.settings.drain_timeout_s
        deadline = time.monotonic() + timeout
        while (left := self.runtime.inflight(names)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            self.events.event("error", f"{left} requests still in flight after {timeout}s drain", where="drain",
                              error="drain timeout")
        self.runtime.stop(names)
        self.routes.book.remove(names)
        self.routes.publish(ctx.workload, ctx.rates, ctx.carbon_intensity)
        self._release_leases(specs)
        for n in names:
            self._known.pop(n, None)
        for n, sp in specs.items():
            self.events.event("replica", f"{n} down", gpu=sp.gpu_id, slice=sp.slice_id, variant=sp.variant,
                              state="down")

    def stop_replicas(self, specs: list[ReplicaSpec], ctx: StepContext) -> None:
        """Drain and stop replicas outside any GPU step (orphans, broken ones)."""
        self._known.update({s.app_name: s for s in specs})
        self._stop([s.app_name for s in specs], ctx)

    def _release_leases(self, specs: dict[str, ReplicaSpec]) -> None:
        """The replicas release their leases on shutdown; this covers one that died first."""
        by_node: dict[str, list[str]] = {}
        for n, sp in specs.items():
            by_node.setdefault(sp.node, []).append(n)
        for node, owners in by_node.items():
            try:
                self.fleet.release_leases(node, owners)
            except Exception as exc:  # noqa: BLE001 - the agent may be gone; its leases expire anyway
                log.warning("releasing leases of %s on %s failed: %s", owners, node, exc)

    # -- MIG ----------------------------------------------------------------------------------------
    def _mig(self, gpu: GpuState, layout: Layout) -> GpuState:
        """Re-partition through the agent; returns the GPU as it is afterwards."""
        ops = self.fleet.apply_layout(gpu.handle, layout)
        for op in ops:
            self.mig_ops += 1
            self.events.event("mig_op", f"{op.op} {op.profile}@{op.start} on {gpu.handle.gpu_id} "
                                        f"{'ok' if op.ok else 'FAILED'} in {op.duration_s:.2f}s",
                              node=op.node, gpu=op.gpu, op=op.op, profile=op.profile, start=op.start,
                              duration_s=op.duration_s, ok=op.ok, error=op.error)
        after = self.fleet.observe().gpus.get(gpu.handle.gpu_id)
        if after is None:
            raise NodeLostError(f"{gpu.handle.node} did not answer after the re-partition")
        bad = [op for op in ops if not op.ok]
        if bad:
            raise RuntimeError(f"MIG {bad[0].op} {bad[0].profile}@{bad[0].start} failed: {bad[0].error}")
        return after

    def _rollback(self, gpu: GpuState, old: GpuPlan, ctx: StepContext) -> StepOutcome:
        """Back to the layout and replicas the GPU had; if even that fails, leave it to the reconciler."""
        mine = [n for n, s in {**self._known, **self.routes.book.specs}.items() if s.gpu_id == gpu.handle.gpu_id]
        keep = {slice_key(s) for s in old.slices if s.variant}
        try:
            specs = {**self._known, **self.routes.book.specs}
            self._stop([n for n in mine if slice_key(assignment_of(specs[n])) not in keep], ctx)
            now = self._mig(gpu, old.layout)
            have = {slice_key(assignment_of(s)) for s in self.routes.book.specs.values()
                    if s.gpu_id == gpu.handle.gpu_id}
            self._start(now, tuple(s for s in old.slices if s.variant and slice_key(s) not in have), ctx)
        except Exception as exc:  # noqa: BLE001
            self.events.event("error", f"{gpu.handle.gpu_id}: rollback failed ({one_line(exc)}); serving on the other "
                                       "GPUs, the reconciler retries", where=f"rollback {gpu.handle.gpu_id}",
                              error=one_line(exc))
            self.routes.publish(ctx.workload, ctx.rates, ctx.carbon_intensity)
            return StepOutcome.FAILED
        self.routes.publish(ctx.workload, ctx.rates, ctx.carbon_intensity)
        return StepOutcome.ROLLED_BACK


def one_line(exc: BaseException) -> str:
    """One line: run.log events never carry tracebacks."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
