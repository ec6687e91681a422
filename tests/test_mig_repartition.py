"""Re-partition plans: property tests against the simulated backend."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mig.errors import InstanceInUseError
from mig.leases import LeaseBook
from mig.placement import all_profile_names, enumerate_layouts, parse_layout
from mig.repartition import apply_plan, plan_repartition
from mig.simulated import SimulatedMigBackend, no_users
from mig.types import Placement

TYPES = ["H100-80GB", "A100-40GB", "A100-80GB", "H200-141GB"]
LAYOUTS = {t: enumerate_layouts(t, all_profile_names(t), maximal=False) + [()] for t in TYPES}


@st.composite
def two_layouts(draw):
    t = draw(st.sampled_from(TYPES))
    return t, draw(st.sampled_from(LAYOUTS[t])), draw(st.sampled_from(LAYOUTS[t]))


def _set_up(gpu_type, layout, leases=None):
    b = SimulatedMigBackend([gpu_type], users=leases.live_owners if leases else no_users)
    for p in layout:
        b.create_instance(0, p.profile, p.start)
    return b


@settings(max_examples=300, deadline=None)
@given(two_layouts())
def test_plan_reaches_target_keeps_common_instances_and_is_minimal(case):
    gpu_type, current, target = case
    b = _set_up(gpu_type, current)
    before = {i.placement: i for i in b.list_instances(0)}
    plan = plan_repartition(b.list_instances(0), target)
    ops = []
    apply_plan(b, 0, plan, on_op=lambda op, p, d, err: ops.append((op, p, err)))

    after = {i.placement: i for i in b.list_instances(0)}
    assert sorted(after) == sorted(target)
    common = set(current) & set(target)
    assert set(plan.keep) == common
    for p in common:  # untouched: same GI and the same MIG device (UUIDs change on re-creation)
        assert after[p] == before[p]
    assert plan.op_count == len(set(current) - set(target)) + len(set(target) - set(current))
    assert len(ops) == plan.op_count and all(err is None for _, _, err in ops)
    assert [op for op, _, _ in ops] == ["destroy"] * len(plan.destroy) + ["create"] * len(plan.create)
    assert not ({p for op, p, _ in ops} & common)


@settings(max_examples=100, deadline=None)
@given(two_layouts())
def test_plan_from_placements_equals_plan_from_instances(case):
    gpu_type, current, target = case
    b = _set_up(gpu_type, current)
    a = plan_repartition(b.list_instances(0), target)
    c = plan_repartition(list(current), target)
    assert (a.keep, a.create, [i.placement for i in a.destroy]) == (c.keep, c.create, list(c.destroy))


def test_in_use_instance_stops_the_plan_and_is_reported():
    leases = LeaseBook()
    b = _set_up("H100-80GB", parse_layout("3g@0,3g@4", "H100-80GB"), leases)
    gi = next(i.gi_id for i in b.list_instances(0) if i.start == 4)
    leases.acquire(0, gi, "yolo:yolo11n#1")
    plan = plan_repartition(b.list_instances(0), parse_layout("3g@0,2g@4,1g@6", "H100-80GB"))
    ops = []
    with pytest.raises(InstanceInUseError, match="In use by another client"):
        apply_plan(b, 0, plan, on_op=lambda *a: ops.append(a))
    assert [(op, p) for op, p, _, _ in ops] == [("destroy", Placement("3g.40gb", 4))]
    assert isinstance(ops[0][3], InstanceInUseError)
    leases.release(0, gi, "yolo:yolo11n#1")
    apply_plan(b, 0, plan_repartition(b.list_instances(0), plan.target))
    assert sorted(i.placement for i in b.list_instances(0)) == sorted(plan.target)


def test_noop_plan():
    layout = parse_layout("7g@0", "H100-80GB")
    b = _set_up("H100-80GB", layout)
    plan = plan_repartition(b.list_instances(0), layout)
    assert plan.is_noop and plan.keep == layout
