"""A GPU step that waits for capacity no other step will add: bridged, or given up after a bound.

The reconciler scenarios reproduce the deadlock (the step waited for ever before bridging
existed) on the Ray-free fakes; the pure decision `plan_bridge` is tested on its own with
made-up capacities.
"""
from __future__ import annotations

from controller.loop.bridge import BridgeSlice, Room, plan_bridge
from controller.loop.rollout import StepOutcome
from controller.loop.settings import ServiceSettings
from controller.planning.plan import SliceAssignment
from mig.types import Placement
from tests.loop_fakes import P3, P4, P7, Stack, gpu, plan

P3_0 = Placement("3g.40gb", 0)
P1_0 = Placement("1g.10gb", 0)
ALBERT = (ServiceSettings("albert", 0.5, 200.0, 5.0),)


def _converge(s: Stack, target, ticks: int = 4) -> list[dict]:
    outcomes = []
    for _ in range(ticks):
        report = s.reconcile(target)
        outcomes.append(report.outcomes)
        if not report.outcomes:
            break
    return outcomes


def _deploy_of(s: Stack, prefix: str) -> int:
    return s.journal.index("deploy", lambda d: any(n.startswith(prefix) for n in d))


# ---- the deadlock, bridged ------------------------------------------------------------------------
def test_one_service_whose_capacity_sits_on_the_changing_gpu_is_bridged_on_an_idle_slice(tmp_path):
    s = Stack(tmp_path)
    s.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, None, 1))))
    s.journal.entries.clear()
    target = plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)), gpu("n1/gpu0", (P7, None, 1)))
    outcomes = _converge(s, target)
    assert outcomes[0] == {"n0/gpu0": StepOutcome.DONE}  # bridged and stepped in the same tick
    assert outcomes[1] == {"n1/gpu0": StepOutcome.DONE} and outcomes[2] == {}  # the bridge went, converged
    assert s.layout("n0") == [("4g.40gb", 0), ("3g.40gb", 4)] and s.layout("n1") == [("7g.80gb", 0)]
    assert sorted(v for g, v, _ in s.running().values()) == ["yolo11l", "yolo11m"]
    j = s.journal
    bridge_up = _deploy_of(s, "replica-n1")
    old_down = j.index("stop", lambda d: any("yolo11x" in n for n in d))
    new_up = _deploy_of(s, "replica-n0")
    bridge_down = j.index("stop", lambda d: any(n.startswith("replica-n1") for n in d))
    assert bridge_up < old_down < j.index("mig") < new_up < bridge_down  # make-before-break throughout
    (_, msg, fields), = s.events.of("bridge")
    assert "n0/gpu0" in msg and fields["services"] == ["yolo"] and fields["gpus"] == ["n1/gpu0"]
    assert not s.events.of("error")


def test_the_only_replica_of_a_second_service_is_bridged_on_a_new_slice_elsewhere(tmp_path):
    s = Stack(tmp_path, more=ALBERT)
    s.reconcile(plan(gpu("n0/gpu0", (P4, "yolo11l", 8, "yolo"), (P3, "xlarge", 8, "albert")),
                     gpu("n1/gpu0", (P4, "yolo11x", 8, "yolo"))))
    s.journal.entries.clear()
    target = plan(gpu("n0/gpu0", (P3_0, "xlarge", 8, "albert"), (P3, "yolo11m", 8, "yolo")),
                  gpu("n1/gpu0", (P4, "yolo11x", 8, "yolo")))
    outcomes = _converge(s, target)
    assert outcomes[0] == {"n0/gpu0": StepOutcome.DONE}
    assert outcomes[1] == {"n1/gpu0": StepOutcome.DONE} and outcomes[2] == {}
    assert s.layout("n0") == [("3g.40gb", 0), ("3g.40gb", 4)]
    assert s.layout("n1") == [("4g.40gb", 0)]  # the bridge's slice was destroyed again
    bridge_up = _deploy_of(s, "replica-n1")
    assert bridge_up < s.journal.index("stop", lambda d: any(n.startswith("replica-n0") and "xlarge" in n for n in d))
    (_, _, fields), = s.events.of("bridge")
    assert fields["services"] == ["albert"] and fields["gpus"] == ["n1/gpu0"]
    assert "(new slice)" in fields["replicas"]  # n1 had no idle slice: one was made in its free space


def test_a_desired_slice_that_fits_now_is_made_first_instead_of_a_bridge(tmp_path):
    """The waiting GPU's own new slice fits beside what runs: change that half first."""
    s = Stack(tmp_path, more=ALBERT)
    s.reconcile(plan(gpu("n0/gpu0", (P3, "yolo11m", 8, "yolo")), gpu("n1/gpu0", (P7, "xlarge", 8, "albert"))))
    s.journal.entries.clear()
    target = plan(gpu("n0/gpu0", (P4, "yolo11l", 8, "yolo"), (P3, "large", 8, "albert")),
                  gpu("n1/gpu0", (P7, "xlarge", 8, "albert")))
    outcomes = _converge(s, target)
    assert outcomes[0] == {"n0/gpu0": StepOutcome.DONE} and outcomes[1] == {}
    assert s.layout("n0") == [("4g.40gb", 0), ("3g.40gb", 4)]
    j = s.journal
    assert j.index("deploy", lambda d: any("yolo11l" in n for n in d)) < j.index("stop", lambda d: any("yolo11m" in n for n in d))
    assert not any(n.startswith("replica-n1") for w, d in j.entries if w == "deploy" for n in d)  # no bridge
    (_, _, fields), = s.events.of("bridge")
    assert fields["gpus"] == ["n0/gpu0"]


# ---- no bridge: a bounded wait, then the GPU keeps its layout -------------------------------------
def test_without_spare_capacity_the_wait_is_bounded_and_the_gpu_keeps_its_layout(tmp_path):
    s = Stack(tmp_path, nodes={"n0": 1}, stuck_after_s=60.0)
    s.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8))))
    target = plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)))
    report = s.reconcile(target)
    assert report.outcomes == {"n0/gpu0": StepOutcome.DEFERRED} and not report.held
    s.clock.now += 59.0
    assert not s.reconcile(target).held and not s.events.of("error")
    s.clock.now += 1.0
    report = s.reconcile(target)
    assert report.held == {"n0/gpu0": ("yolo",)}
    assert report.reverted["n0/gpu0"].layout == (P7,)  # the desired state follows what runs
    (_, msg, fields), = s.events.of("error")
    assert "n0/gpu0" in msg and "yolo" in msg and fields["services"] == ["yolo"]
    assert [v for _, v, _ in s.running().values()] == ["yolo11x"]  # never stopped
    assert "stop" not in s.journal.kinds() and not s.events.of("bridge")


def test_two_services_swapping_full_gpus_without_room_are_both_held(tmp_path):
    s = Stack(tmp_path, more=ALBERT, stuck_after_s=30.0)
    s.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8, "yolo")), gpu("n1/gpu0", (P7, "xlarge", 8, "albert"))))
    target = plan(gpu("n0/gpu0", (P7, "xlarge", 8, "albert")), gpu("n1/gpu0", (P7, "yolo11x", 8, "yolo")))
    assert set(s.reconcile(target).outcomes.values()) == {StepOutcome.DEFERRED}
    s.clock.now += 30.0
    report = s.reconcile(target)
    assert report.held == {"n0/gpu0": ("yolo",), "n1/gpu0": ("albert",)}
    assert sorted(v for _, v, _ in s.running().values()) == ["xlarge", "yolo11x"]


def test_a_tick_that_moved_another_gpu_neither_bridges_nor_gives_up(tmp_path):
    """Waiting is right while other steps progress: they may add the capacity."""
    s = Stack(tmp_path, nodes={"n0": 1, "n1": 1}, stuck_after_s=0.0)
    s.reconcile(plan(gpu("n0/gpu0", (P7, "yolo11x", 8)), gpu("n1/gpu0", (P7, None, 1))))
    target = plan(gpu("n0/gpu0", (P4, "yolo11l", 8), (P3, "yolo11m", 8)), gpu("n1/gpu0", (P7, "yolo11l", 8)))
    report = s.reconcile(target)  # n1 adds yolo first (it takes nothing away), then n0 can change
    assert report.outcomes == {"n1/gpu0": StepOutcome.DONE, "n0/gpu0": StepOutcome.DONE}
    assert not s.events.of("bridge") and not report.held


# ---- the pure decision ------------------------------------------------------------------------------
def _offers(caps: dict[str, float]):
    """Every profile offers one replica of the service, carrying caps[profile] req/s."""
    def offers(gpu_type: str, placement: Placement, service: str):
        c = caps.get(placement.profile, 0.0)
        return [(SliceAssignment(placement, f"{service}-v", 1, 0.0, service), c)] if c else []
    return offers


def _capacity(caps: dict[str, float]):
    return lambda gpu_type, a: caps.get(a.placement.profile, 0.0)


CAPS = {"1g.10gb": 10.0, "2g.20gb": 20.0, "3g.40gb": 30.0, "4g.40gb": 40.0, "7g.80gb": 70.0}


def test_plan_bridge_prefers_the_smallest_new_slice_that_covers():
    rooms = [Room("a", "H100-80GB", (P4,), (), (), changing=True),
             Room("b", "H100-80GB", (P4,), (), ())]
    out = plan_bridge({"yolo": 15.0}, rooms, _offers(CAPS), _capacity(CAPS))
    assert out == (BridgeSlice("b", SliceAssignment(Placement("2g.20gb", 4), "yolo-v", 1, 0.0, "yolo"), create=True,
                               permanent=False),)


def test_plan_bridge_uses_an_idle_slice_before_making_one():
    rooms = [Room("b", "H100-80GB", (P4, P3), (P3,), ())]
    (b,) = plan_bridge({"yolo": 15.0}, rooms, _offers(CAPS), _capacity(CAPS))
    assert (b.gpu_id, b.assignment.placement, b.create) == ("b", P3, False)


def test_plan_bridge_starts_a_desired_replica_that_fits_before_any_temporary_one():
    desired = SliceAssignment(P3, "yolo11m", 8, 0.5, "yolo")
    rooms = [Room("a", "H100-80GB", (P4,), (), (desired,), changing=True),
             Room("b", "H100-80GB", (P4, P3), (P3,), ())]
    assert plan_bridge({"yolo": 25.0}, rooms, _offers(CAPS), _capacity(CAPS)) == (
        BridgeSlice("a", desired, create=True, permanent=True),)


def test_plan_bridge_takes_several_slices_the_largest_first_when_none_covers():
    rooms = [Room("b", "H100-80GB", (P3_0,), (), ()), Room("c", "H100-80GB", (P3_0,), (), ())]
    out = plan_bridge({"yolo": 45.0}, rooms, _offers(CAPS), _capacity(CAPS))
    assert [(b.gpu_id, b.assignment.placement) for b in out] == [("b", P3), ("c", Placement("2g.20gb", 4))]


def test_plan_bridge_leaves_the_changing_gpu_alone_and_gives_up_without_room():
    rooms = [Room("a", "H100-80GB", (P4,), (), (), changing=True),  # free slots, but its step re-partitions
             Room("b", "H100-80GB", (P7,), (), ())]
    assert plan_bridge({"yolo": 5.0}, rooms, _offers(CAPS), _capacity(CAPS)) is None
    assert plan_bridge({"yolo": 500.0}, [Room("b", "H100-80GB", (), (), ())], _offers(CAPS), _capacity(CAPS)) is None
