"""Rollout and reconciliation without Ray: make-before-break order, adoption, capacity deferral,
rollback after a failed MIG step, a node lost mid-rollout, orphans, broken replicas, leases.

The fleet drives the real simulated MIG backend; the replica runtime and the bus are in-process
and journal every call, so the tests assert on the order of operations.
"""
from __future__ import annotations

import pytest

from configs import load_services
from controller.loop.reconciler import Reconciler
from controller.loop.rollout import Rollout, StepOutcome, order_changes
from controller.loop.routes import Routes
from controller.loop.service_model import Workload
from controller.loop.settings import LoopSettings, ServiceSettings
from controller.loop.view import RUNNING, ReplicaState
from controller.planning.plan import GpuChange, SliceAssignment
from controller.serving.replica import ReplicaSpec
from gpu_node.records import LeaseRecord
from models.performance import PerformanceModel
from tests.loop_fakes import P3, P4, P7, Events, Stack, gpu, plan


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def test_first_plan_creates_slices_then_replicas_and_routes_all_traffic(stack):
    report = stack.reconcile(plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    assert report.converged and set(report.outcomes) == {"n0/gpu0", "n1/gpu0"}
    assert stack.layout("n0") == [("4g.40gb", 0), ("3g.40gb", 4)] and stack.layout("n1") == [("7g.80gb", 0)]
    assert sorted(v for _, v, _ in stack.running().values()) == ["yolo11l", "yolo11m", "yolo11x"]
    j = stack.journal
    assert j.index("mig", lambda d: ("create", "4g.40gb", 0, True) in d) < j.index("deploy", lambda d: any("yolo11l" in n for n in d))
    table = stack.bus.last
    assert abs(sum(e.share for e in table.entries) - 1.0) < 1e-9 and not any(e.draining for e in table.entries)
    for e in table.entries:  # the replica's whole queue bound: ingress replicas split it among the live ones
        assert e.max_queue == stack.ctx.workload.model("yolo").queue_bound(stack.runtime.apps[e.name].spec)


def test_restarted_controller_adopts_what_runs_without_a_restart(stack, tmp_path):
    target = plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)))
    stack.reconcile(target)
    deploys, before = stack.runtime.deploys, dict(stack.runtime.apps)
    again = Stack.__new__(Stack)  # a new controller process: new routes, rollout, reconciler; same cluster
    again.__dict__.update(stack.__dict__)
    again.events, again.journal = Events(), stack.journal
    again.routes = Routes(stack.bus, again.events)
    again.rollout = Rollout(stack.fleet, stack.runtime, again.routes, again.events)
    again.reconciler = Reconciler(stack.fleet, stack.runtime, again.routes, again.rollout, again.events)
    report = again.reconcile(target)
    assert report.outcomes == {} and report.converged
    assert stack.runtime.deploys == deploys and stack.runtime.apps == before  # same replicas, none restarted
    assert {e.name for e in stack.bus.last.entries} == set(before) and sum(e.share for e in stack.bus.last.entries) > 0.99


def test_variant_swap_warms_the_new_replica_before_draining_the_old(stack):
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11l", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    stack.runtime.pending = {n: 3 for n in stack.runtime.apps}  # requests in flight everywhere
    stack.journal.entries.clear()
    changes, swaps = stack.rollout.layout_changes, stack.rollout.variant_swaps
    report = stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11m", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    assert report.outcomes == {"n0/gpu0": StepOutcome.DONE}
    j = stack.journal
    started = j.index("deploy", lambda d: any("yolo11m" in n for n in d))
    warm = j.index("table", lambda d: any("yolo11m" in n and share == 0.0 for n, (share, _) in d.items()))
    draining = j.index("table", lambda d: any("yolo11l" in n and drain for n, (_, drain) in d.items()))
    stopped = j.index("stop", lambda d: any("yolo11l" in n for n in d))
    assert started < warm < draining < stopped
    assert "mig" not in j.kinds()  # a kept slice: no MIG operation
    assert (stack.rollout.variant_swaps - swaps, stack.rollout.layout_changes - changes) == (1, 0)


def test_repartition_drains_before_destroying_and_creates_before_starting(stack):
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    stack.journal.entries.clear()
    changes, ops = stack.rollout.layout_changes, stack.rollout.mig_ops
    stack.reconcile(plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    j = stack.journal
    drained = j.index("table", lambda d: any(n.startswith("replica-n0") and drain for n, (_, drain) in d.items()))
    stopped = j.index("stop")
    mig = j.index("mig")
    started = j.index("deploy")
    assert drained < stopped < mig < started
    assert stack.layout("n0") == [("4g.40gb", 0), ("3g.40gb", 4)]
    assert (stack.rollout.layout_changes - changes, stack.rollout.mig_ops - ops) == (1, 3)


def test_a_step_that_would_leave_too_little_capacity_waits(tmp_path):
    s = Stack(tmp_path, nodes={"n0": 1}, rate=20.0)
    s.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8))))
    s.journal.entries.clear()
    report = s.reconcile(plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8))))
    assert report.outcomes == {"n0/gpu0": StepOutcome.DEFERRED} and not report.converged
    assert "stop" not in s.journal.kinds() and "mig" not in s.journal.kinds()
    assert [v for _, v, _ in s.running().values()] == ["yolo11x"]  # still serving, nothing half-done
    assert s.events.of("warning")  # said once that it waits
    s.reconcile(plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8))))
    assert len(s.events.of("warning")) == 1


def test_failed_mig_create_rolls_the_gpu_back_to_a_serving_state(stack):
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    stack.fleet.fail_create.add("3g.40gb")
    report = stack.reconcile(plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    assert report.outcomes == {"n0/gpu0": StepOutcome.ROLLED_BACK}
    assert stack.layout("n0") == [("7g.80gb", 0)]
    assert ("n0/gpu0", "yolo11x", 0) in stack.running().values()
    assert report.reverted["n0/gpu0"].layout == (P7,)
    assert any("rolling back" in m for _, m, _ in stack.events.of("error"))
    assert all(not e.draining for e in stack.bus.last.entries) and len(stack.bus.last.entries) == 2


def test_node_lost_mid_rollout_ends_its_step_and_the_rest_still_converges(stack):
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    stack.fleet.die_on_apply.add("n1")
    target = plan(gpu("n0/gpu0", (P7, "yolo11l", 8)), gpu("n1/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)))
    report = stack.reconcile(target)
    assert report.outcomes["n1/gpu0"] is StepOutcome.LOST
    assert report.outcomes["n0/gpu0"] is StepOutcome.DONE
    assert any("lost" in m for _, m, _ in stack.events.of("error"))
    report = stack.reconcile(target)  # the node stays down: its GPU is left alone, no exception
    assert "n1/gpu0" not in report.outcomes and "n1/gpu0" not in report.serving_gpus
    stack.fleet.down.clear()  # the agent comes back (restarted): its GPU is converged in the next tick
    report = stack.reconcile(target)
    assert report.outcomes == {"n1/gpu0": StepOutcome.DONE} and stack.layout("n1") == [("4g.40gb", 0), ("3g.40gb", 4)]


def test_replicas_of_gpus_no_longer_planned_stop_once_the_rest_carries_the_load(stack):
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8))))
    assert [g for g, _, _ in stack.running().values()] == ["n0/gpu0"]


def test_broken_replica_is_stopped_and_restarted_where_the_plan_wants_it(stack):
    target = plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8)))
    stack.reconcile(target)
    name = next(n for n in stack.runtime.apps if n.startswith("replica-n0"))
    stack.runtime.apps[name] = ReplicaState(stack.runtime.apps[name].spec, "DEPLOY_FAILED")
    stack.reconcile(target)
    assert stack.journal.index("stop", lambda d: name in d) >= 0
    assert stack.runtime.apps[name].status == RUNNING  # started again by the same tick's convergence


def test_a_replica_that_is_not_running_gets_no_traffic(stack):
    target = plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8)))
    stack.reconcile(target)
    name = next(n for n in stack.runtime.apps if n.startswith("replica-n0"))
    stack.runtime.apps[name] = ReplicaState(stack.runtime.apps[name].spec, "DEPLOYING")  # Serve restarting it
    deploys = stack.runtime.deploys
    stack.reconcile(target)
    assert name not in {e.name for e in stack.bus.last.entries}
    assert stack.runtime.deploys == deploys  # not duplicated while Serve brings it back
    stack.runtime.apps[name] = ReplicaState(stack.runtime.apps[name].spec, RUNNING)
    stack.reconcile(target)
    assert name in {e.name for e in stack.bus.last.entries if e.share > 0}


def test_leases_of_replicas_that_no_longer_exist_are_released(stack):
    """Clover's own dead replicas' leases go; a lease other Ray work took on a borrowed free slice
    is not Clover's to release (it lapses by itself if its owner stops renewing it)."""
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    live = next(iter(stack.runtime.apps))
    stack.fleet.leases_by_node["n0"] = [LeaseRecord(0, 1, live, 0.0, False), LeaseRecord(0, 2, "replica-gone", 0.0, True),
                                        LeaseRecord(0, 3, "nightly-batch", 0.0, False)]
    stack.reconciler._ticks = 0  # the sweep runs on the first tick of every few
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, "yolo11x", 8))))
    assert [x.owner for x in stack.fleet.leases_by_node["n0"]] == [live, "nightly-batch"]


def test_steps_ordered_by_capacity_taken_offline_and_noops_dropped():
    big = GpuChange("n0/gpu1", stop=(SliceAssignment(P7, "yolo11x", 8),), start_kept=(), start_new=(), mig_ops=2)
    small = GpuChange("n0/gpu0", stop=(SliceAssignment(P3, "yolo11m", 8),), start_kept=(), start_new=(), mig_ops=2)
    noop = GpuChange("n0/gpu2", (), (), (), 0)
    lost = {"n0/gpu1": 300.0, "n0/gpu0": 40.0, "n0/gpu2": 0.0}
    assert [c.gpu_id for c in order_changes([big, noop, small], lambda c: lost[c.gpu_id])] == ["n0/gpu0", "n0/gpu1"]


def _spec(service: str, variant: str, key: str) -> ReplicaSpec:
    return ReplicaSpec(service=service, variant=variant, variant_key=key, input="image", batch=1, node="n", gpu=0,
                       gpu_id="n/gpu0", gpu_type="H100-80GB", profile="7g.80gb", start=0, compute_slices=7, gi_id=0,
                       device_env={})


def test_capacity_rule_keeps_headroom_per_service():
    """Replicas may go offline only while each affected service keeps rate × headroom of capacity."""
    services = load_services()
    settings = LoopSettings("yolo", 0.5, 100.0, 300.0, 10.0,
                            more_services=(ServiceSettings("albert", 0.5, 200.0, 5.0),))
    workload = Workload.of(settings, {n: services.get(n) for n in ("yolo", "albert")}, PerformanceModel.default())
    yolo = _spec("yolo", "yolo11n", services.get("yolo").variant("yolo11n").profile_key)
    cap = workload.capacity([yolo], "yolo", settings.transition_sla_factor)
    assert cap > 0 and workload.capacity([yolo], "albert") == 0.0
    h = settings.headroom
    assert workload.short_of([yolo], {"yolo": cap / h * 0.99, "albert": 5.0}, ["yolo"]) == []
    assert workload.short_of([yolo], {"yolo": cap / h * 1.01}, ["yolo"]) == ["yolo"]
    # albert has no replica left among these: taking one of its replicas away must wait
    assert workload.short_of([yolo], {"yolo": 1.0, "albert": 5.0}, ["yolo", "albert"]) == ["albert"]


def test_claims_go_out_before_the_gpus_change_and_waiting_for_capacity_is_said_once(stack):
    from controller.loop.capacity import PENDING_TICKS
    from gpu_node.records import FreeSlice, Reservation

    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P4, "yolo11l", 8), (P3, None, 1))))
    assert stack.fleet.claims == {"n0": {0: (P7,)}, "n1": {0: (P4,)}}  # the idle 3g slice is not Clover's
    stack.journal.entries.clear()
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8))))
    j = stack.journal
    assert j.index("claim", lambda d: d["n1"] == {0: (P4, P3)}) < j.index("deploy", lambda d: any("yolo11m" in n for n in d))
    free = FreeSlice(0, 1, "3g.40gb", 4, 3, "MIG-x")
    stack.fleet.reservations = {"n1": Reservation("clover_mig_slice", 7, 7, 4, 3, ())}  # other work holds 3 units

    def waits() -> list[str]:
        return [m for _, m, f in stack.events.of("warning") if f.get("where") == "capacity n1"]

    for _ in range(PENDING_TICKS - 1):  # a holding that just grew is pending until Ray places it: no warning yet
        stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8))))
    assert waits() == []
    for _ in range(2):  # still short: said once
        stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8))))
    assert len(waits()) == 1 and "3 clover_mig_slice units Clover needs back are held by other Ray work" in waits()[0]
    stack.fleet.reservations = {"n1": Reservation("clover_mig_slice", 7, 4, 4, 0, (free,))}
    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P4, "yolo11l", 8), (P3, None, 1))))
    assert "3 clover_mig_slice units free for other Ray work (gpu0 3g.40gb@4)" in stack.events.of("capacity")[-1][1]


def test_slices_a_pending_mig_change_destroys_are_claimed_until_it_is_made(stack):
    """A GPU re-laid out where no replica runs (here an idle split GPU made whole by an operator's
    plan): its old slices are not lent to other Ray work between the plan and the MIG change."""
    from controller.loop.capacity import claims_of

    stack.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P4, None, 1), (P3, None, 1))))
    assert stack.fleet.claims["n1"] == {0: ()}  # idle and staying so: all free
    whole = plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, None, 1)))
    assert claims_of(whole, stack.fleet.observe(), [])["n1"] == {0: (P4, P3)}
    stack.reconcile(whole)
    assert stack.layout("n1") == [("7g.80gb", 0)] and stack.fleet.claims["n1"] == {0: (P4, P3)}  # sent before
    assert claims_of(whole, stack.fleet.observe(), [])["n1"] == {0: ()}  # made: the whole GPU is free


def test_what_a_tick_applied_is_counted_for_the_services_it_touched():
    """Metrics per service: gpu0 moved a slice from yolo to albert (a layout change, counted once,
    for both services' plan changes), gpu1 swapped yolo's variant (albert's replicas there did
    not change: not counted for albert), gpu2 changed with one service's plan (service "")."""
    from controller.loop.reconciler import ReconcileReport
    from controller.loop.view import FleetView

    report = ReconcileReport(FleetView(), layout_changes=["gpu0", "gpu2"], variant_swaps=["gpu1"],
                             services_changed={"gpu0": ("albert", "yolo"), "gpu1": ("yolo",), "gpu2": ("",)})
    assert report.applied_by_service("yolo") == {"albert": ({"gpu0": 1}, 0), "yolo": ({"gpu2": 1}, 1)}
    assert ReconcileReport(FleetView(), variant_swaps=["gpu1"]).applied_by_service("yolo") == {"yolo": ({}, 1)}
