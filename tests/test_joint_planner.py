"""Joint planning of several services on shared GPUs: exact against an enumeration, one service
is the single-service planner bit for bit, accuracy floors hold, slices go where they pay."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.loader import load_services
from controller.planning.joint import (
    idle_shares,
    joint_problem,
    predict_joint,
    service_predictions,
    service_view,
    solve_joint,
    solve_joint_exact,
)
from controller.planning.model import PlanningProblem, ReconfigCost, column_of
from controller.planning.plan import Plan
from controller.planning.planner import InfeasibleError, solve_exact
from controller.planning.policies.oracle import solve_joint_oracle
from mig.placement import compute_slices_of, is_valid_layout
from mig.types import Placement
from models.performance import PerformanceModel
from tests.test_planner import SLA

PERF = PerformanceModel.default()
SERVICES = load_services()
PAIRS = {"yolo": ("yolo11n", "yolo11x"), "efficientnet": ("b0", "b7"), "albert": ("base", "xxlarge")}
H100 = (("gpu0", "H100-80GB"),)
TWO = (("gpu0", "H100-80GB"), ("gpu1", "H100-80GB"))


def _problem(service: str, gpus, rate: float, **kw) -> PlanningProblem:
    return PlanningProblem(SERVICES.get(service), gpus, PERF, rate, SLA[service], **kw)


def _capacity(service: str, variant: str, gpus) -> float:
    v = SERVICES.get(service).variant(variant)
    return sum(PERF.throughput_rps(v.profile_key, t, 7, 1) for _, t in gpus)


def check_joint(plan: Plan, jp) -> None:
    """Valid layouts, one service per slice, each service's shares sum to one within its SLA."""
    for g in plan.gpus:
        assert is_valid_layout(g.gpu_type, g.layout)
    for p in jp.problems:
        view = service_view(plan, p)
        assert sum(s.share for _, s in view.replicas()) == pytest.approx(1.0, abs=1e-6)
        for g, s in view.replicas():
            assert s.service == p.service.name
            assert s.share * p.rate_rps <= column_of(p, g.gpu_type, s).rmax_rps * (1 + 1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=st.sampled_from([("yolo", "albert"), ("efficientnet", "albert"), ("yolo", "efficientnet")]),
    loads=st.tuples(st.floats(0.05, 0.6), st.floats(0.05, 0.6)),
    ci=st.floats(20.0, 800.0),
    lam=st.floats(0.0, 1.0),
)
def test_joint_milp_reaches_the_oracle(pair, loads, ci, lam):
    problems = tuple(_problem(s, H100, max(0.5, f * _capacity(s, PAIRS[s][0], H100)), lam=lam, carbon_intensity=ci,
                              batch_sizes=(1,), variants=PAIRS[s]) for s, f in zip(pair, loads))
    jp = joint_problem(problems)
    try:
        oracle = solve_joint_oracle(jp)
    except ValueError:
        with pytest.raises(InfeasibleError):
            solve_joint_exact(jp)
        return
    ours = solve_joint_exact(jp)
    check_joint(ours, jp)
    assert ours.predicted.objective == pytest.approx(oracle.predicted.objective, abs=1e-7)


@pytest.mark.parametrize("service", ["yolo", "efficientnet", "albert"])
def test_one_service_is_the_single_service_planner_bit_for_bit(service):
    p = _problem(service, TWO, 0.4 * _capacity(service, SERVICES.get(service).base.name, TWO), lam=0.3,
                 carbon_intensity=300.0)
    single, joint = solve_exact(p), solve_joint_exact(joint_problem((p,)))
    assert joint.gpus == single.gpus
    assert joint.predicted == single.predicted


def test_idle_power_is_split_so_the_services_add_up_to_the_cluster():
    a, b = _problem("yolo", TWO, 60.0), _problem("albert", TWO, 20.0)
    jp = joint_problem((a, b))
    assert sum(idle_shares(jp.problems)) == pytest.approx(1.0)
    plan = solve_joint_exact(jp)
    preds = service_predictions(plan, jp)
    idle = sum(PERF.idle_power_w(t) for _, t in TWO)
    assert sum(p.power_w for p in preds.values()) == pytest.approx(predict_joint(plan, jp).power_w)
    assert sum(p.power_w for p in preds.values()) > idle  # idle counted once, plus both services' work
    assert sum(p.power_w for p in preds.values()) < 2 * idle


def test_accuracy_floor_is_a_hard_constraint():
    a = _problem("efficientnet", H100, 40.0, lam=0.9, carbon_intensity=600.0)  # carbon-heavy: small variants
    b = _problem("yolo", H100, 20.0, lam=0.9, carbon_intensity=600.0)
    free = solve_joint_exact(joint_problem((a, b)))
    acc = service_predictions(free, joint_problem((a, b)))["efficientnet"].accuracy
    floor = acc + 0.5 * (max(v.accuracy for v in a.service.variants) - acc)
    jp = joint_problem((a, b), min_accuracy=(floor, None))
    held = solve_joint_exact(jp)
    check_joint(held, jp)
    assert service_predictions(held, jp)["efficientnet"].accuracy >= floor - 1e-9
    with pytest.raises(InfeasibleError, match="efficientnet"):
        solve_joint_exact(joint_problem((a, b), min_accuracy=(1.01 * max(v.accuracy for v in a.service.variants),
                                                               None)))


def test_a_service_named_twice_is_refused():
    with pytest.raises(ValueError, match="named twice"):
        joint_problem((_problem("yolo", H100, 5.0), _problem("yolo", H100, 5.0)))


def _slices(plan: Plan, service: str) -> int:
    return sum(compute_slices_of(s.placement.profile) for _, s in plan.replicas() if s.service == service)


def test_slices_move_between_services_when_their_loads_swap():
    """Two services on two H100s: when the loads swap, capacity follows (a slice changes service)."""
    def plan_for(ra, rb, current=None):
        jp = joint_problem((_problem("yolo", TWO, ra, lam=0.3, batch_sizes=(1,)),
                            _problem("efficientnet", TWO, rb, lam=0.3, batch_sizes=(1,))), current=current)
        return jp, solve_joint(jp)

    ya = _capacity("yolo", "yolo11x", TWO)
    ea = _capacity("efficientnet", "b7", TWO)
    _, first = plan_for(1.2 * ya, 0.1 * ea)
    jp, second = plan_for(0.1 * ya, 1.2 * ea, current=first)
    check_joint(second, jp)
    owner = {(g.gpu_id, s.placement): s.service for g, s in first.replicas()}
    moved = [(g.gpu_id, s.placement) for g, s in second.replicas() if owner.get((g.gpu_id, s.placement), s.service)
             != s.service]
    assert _slices(second, "efficientnet") > _slices(first, "efficientnet")
    assert moved  # a slice that served yolo now serves efficientnet


def test_pay_back_keeps_the_current_joint_plan_when_nothing_changes():
    jp = joint_problem((_problem("yolo", TWO, 40.0), _problem("albert", TWO, 10.0)))
    first = solve_joint_exact(jp)
    again = solve_joint(joint_problem(jp.problems, current=first))
    assert again.gpus == first.gpus
    short = joint_problem(tuple(p.with_(reconfig=ReconfigCost(horizon_h=0)) for p in jp.problems), current=first)
    assert solve_joint(short).gpus == first.gpus


def test_a_held_gpu_keeps_its_layout_in_the_joint_plan():
    split = (Placement("4g.40gb", 0), Placement("3g.40gb", 4))
    jp = joint_problem((_problem("yolo", TWO, 40.0, held=(("gpu0", split),)), _problem("albert", TWO, 10.0)))
    plan = solve_joint(jp)
    assert plan.gpus[0].layout == split
    check_joint(plan, jp)
