"""The plan diff (controller/planning/plan.py)."""
from controller.planning.plan import (
    GpuPlan,
    Plan,
    SliceAssignment,
    diff_gpu,
    plan_changed,
)
from mig.types import Placement

P7 = Placement("7g.80gb", 0)
P4 = Placement("4g.40gb", 0)
P3 = Placement("3g.40gb", 4)


def gpu(*slices: tuple[Placement, str | None, int], gid: str = "n0/gpu0") -> GpuPlan:
    return GpuPlan(gid, "H100-80GB", tuple(SliceAssignment(p, v, b, 0.5) for p, v, b in slices))


def test_same_plan_with_other_shares_is_no_change():
    a = gpu((P4, "yolo11l", 8), (P3, "yolo11l", 8))
    b = GpuPlan(a.gpu_id, a.gpu_type, tuple(SliceAssignment(s.placement, s.variant, s.batch, 0.9) for s in a.slices))
    assert diff_gpu(a, b).is_noop
    assert not plan_changed(Plan("yolo", (a,)), Plan("yolo", (b,)))


def test_variant_swap_on_kept_slice_needs_no_mig_op():
    c = diff_gpu(gpu((P7, "yolo11l", 8)), gpu((P7, "yolo11x", 8)))
    assert not c.layout_changes
    assert [s.variant for s in c.start_kept] == ["yolo11x"] and not c.start_new
    assert [s.variant for s in c.stop] == ["yolo11l"]


def test_repartition_stops_old_slices_and_starts_on_new_ones():
    c = diff_gpu(gpu((P4, "yolo11l", 8), (P3, "yolo11m", 8)), gpu((P7, "yolo11x", 8)))
    assert c.layout_changes
    assert {s.placement for s in c.stop} == {P4, P3}
    assert [s.placement for s in c.start_new] == [P7] and not c.start_kept


def test_batch_change_is_a_replica_change():
    c = diff_gpu(gpu((P7, "yolo11x", 4)), gpu((P7, "yolo11x", 8)))
    assert len(c.stop) == 1 and len(c.start_kept) == 1 and not c.layout_changes


def test_idle_slice_gets_no_replica_and_first_plan_starts_everything():
    c = diff_gpu(None, gpu((P4, "yolo11l", 8), (P3, None, 1)))
    assert [s.placement for s in c.start_new] == [P4] and not c.stop and c.layout_changes


def test_plan_with_a_gpu_removed_is_a_change():
    a, b = gpu((P7, "yolo11x", 8)), gpu((P7, "yolo11x", 8), gid="n1/gpu0")
    assert plan_changed(Plan("yolo", (a, b)), Plan("yolo", (a,)))
    assert plan_changed(None, Plan("yolo", (a,)))
