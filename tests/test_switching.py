"""Switching costs, the schedule DP, and the pay-back that never loses to always switching."""
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.loader import load_services
from controller.carbon.trace import load_trace
from controller.planning.model import PlanningProblem, ReconfigCost, base_p95_ms, predict, served_objective
from controller.planning.planner import horizon, solve
from controller.planning.policy_runs import run_policies
from controller.planning.replay import Replay, SimConfig
from controller.planning.replay_load import default_rate_rps, time_scaled_config, traffic
from controller.planning.switching import (
    best_schedule,
    interim_plan,
    load_power_w,
    switch_cost,
    transition_seconds,
)
from loadgen.arrivals import load_rate_trace
from models.performance import PerformanceModel

PERF = PerformanceModel.default()
SERVICES = load_services()
INF = float("inf")


def test_schedule_switches_only_where_it_pays_and_ties_keep():
    # candidate 0 (deployed) vs 1: one good step for 1 does not pay a cost of 2, three do
    costs = [[0.0, 2.0], [2.0, 0.0]]
    assert best_schedule([[0, 1], [0, 0], [0, 0]], costs, [0.0, 2.0]) == [0, 0, 0]
    assert best_schedule([[0, 1], [0, 1], [0, 1]], costs, [0.0, 2.0]) == [1, 1, 1]
    assert best_schedule([[0, 0]], costs, [0.0, 0.0]) == [0]  # a tie keeps the deployed plan
    # the deployed plan cannot serve step 2: switch there, not before
    assert best_schedule([[1, 0], [1, 0], [-INF, 0]], costs, [0.0, 2.0]) == [0, 0, 1]
    with pytest.raises(ValueError, match="no candidate"):
        best_schedule([[-INF, -INF]], costs, [0.0, 0.0])


def _one_gpu_case():
    svc = SERVICES.get("efficientnet")
    gpus = (("gpu0", "A100-40GB"),)
    rate = default_rate_rps(svc, gpus, PERF)
    return PlanningProblem(svc, gpus, PERF, rate, base_p95_ms(svc, gpus, PERF, rate), lam=0.1, batch_sizes=(1, 2))


class Fixed:
    name = "fixed"

    def __init__(self, plans):
        self.plans = plans

    def decide(self, ctx):
        return self.plans[min(ctx.hour, len(self.plans) - 1)]


def test_switch_cost_is_what_the_replay_charges():
    problem = _one_gpu_case()
    a = solve(problem.with_(carbon_intensity=100.0))
    b = solve(problem.with_(carbon_intensity=400.0, current=a))
    assert interim_plan(problem, a, b) is None  # one slice: nothing serves while it swaps
    t = transition_seconds(problem, a, b)
    assert t == problem.reconfig.model_load_s
    obj = served_objective(problem)
    lost = obj.value(PERF.idle_power_w("A100-40GB"), 0.0)
    cost = switch_cost(problem, a, b)
    assert cost > t / 3600 * (predict(b, problem).objective - lost) > 0  # + the energy of loading b
    out = Replay(problem, [100.0, 400.0], Fixed([a, b]), SimConfig(window_s=20)).run()
    assert out["reconfigurations"] == 1 and out["swaps"] == 1 and out["layout_changes"] == 0
    assert out["lost_requests"] == pytest.approx(problem.rate_rps * t, rel=0.25)
    # a lost request counts at accuracy 0
    served = 1 - out["lost_requests"] / out["requests"]
    assert out["accuracy"] < served * max(predict(a, problem).accuracy, predict(b, problem).accuracy) + 1e-9


def test_a_switch_is_priced_at_the_traffic_it_meets():
    # on bursty traffic the step's mean says little about the seconds of a transition: a switch made
    # in an idle moment loses no request and costs only the energy of loading the new replica
    problem = _one_gpu_case()
    a = solve(problem.with_(carbon_intensity=100.0))
    b = solve(problem.with_(carbon_intensity=400.0, current=a))
    obj = served_objective(problem)
    loading = -obj.power_coef * load_power_w(problem, a, b) * problem.reconfig.model_load_s / 3600
    assert switch_cost(problem.with_(switch_rate_rps=0.0), a, b) == pytest.approx(loading, rel=1e-9, abs=1e-15)
    assert switch_cost(problem.with_(switch_rate_rps=problem.rate_rps), a, b) == switch_cost(problem, a, b)
    burst = problem.with_(rate_rps=2 * problem.rate_rps, mean_rate_rps=problem.rate_rps)
    assert switch_cost(burst.with_(switch_rate_rps=2 * problem.rate_rps), a, b) > switch_cost(burst, a, b)
    # later steps of the horizon keep the ratio of the traffic a switch meets to the planned rate
    steps = horizon(problem.with_(switch_rate_rps=0.25 * problem.rate_rps, rate_forecast=(2 * problem.rate_rps,),
                                  reconfig=replace(problem.reconfig, horizon_h=3)))
    assert [s.switch_rate_rps / s.rate_rps for s in steps] == pytest.approx([0.25] * 3)


def test_pay_back_beats_always_switching_on_the_issue_case():
    # issue 14: efficientnet, 1xA100-40GB, batch 1/2, 12 h of clover_ciso-march_49h, λ 0.1 — ours lost
    # (0.0056 < 0.0062): the pay-back judged switches with the full-batch energy, which understates what
    # a smaller variant saves when batches are partly filled.
    problem = _one_gpu_case()
    values = list(load_trace("clover_ciso-march_49h").values[:12])
    runs = run_policies(problem, values, ["ours", "ours-myopic", "hindsight"], SimConfig(window_s=20))
    f = {name: r.summary["objective"] for name, r in runs.items()}
    assert f["ours"] >= f["ours-myopic"]
    assert f["hindsight"] >= f["ours"] and f["hindsight"] >= f["ours-myopic"]


def test_pay_back_beats_always_switching_on_bursty_traffic():
    # load bench case albert / code / ciso-march / 30 %: on/off traffic whose hour boundaries are idle.
    # Priced at the step's mean, switching away from a burst plan and back looked dear, so ours kept a
    # worse plan and trailed ours-myopic; a switch is now priced at the traffic it meets.
    svc = SERVICES.get("albert")
    gpus = (("gpu0", "H100-80GB"), ("gpu1", "H100-80GB"))
    trace = load_trace("clover_ciso-march_49h")
    values = list(trace.values[:20])
    config = time_scaled_config(seed=1)
    capacity = default_rate_rps(svc, gpus, PERF, 1.0)
    load = traffic(load_rate_trace("azure_llm_2023_code"), trace.times[0], 0.3 * capacity, len(values), config, 3.0)
    sla = base_p95_ms(svc, gpus, PERF, 0.5 * capacity)
    problem = PlanningProblem(svc, gpus, PERF, float(load.mean()), sla, lam=0.1)
    runs = run_policies(problem, values, ["ours", "ours-myopic"], config, load=load)
    f = {name: r.summary["objective"] for name, r in runs.items()}
    assert f["ours"] >= f["ours-myopic"]
    assert runs["ours"].summary["reconfigurations"] < runs["ours-myopic"].summary["reconfigurations"]


def _model_total(problem, cis, pay_back):
    """Σ objective-hours (batches as they form) − switching costs of a policy's decisions, by the model."""
    current, total = None, 0.0
    for h, ci in enumerate(cis):
        horizon = len(cis) - h if pay_back else 0  # the rest of the case, or always switch
        step = problem.with_(carbon_intensity=ci, current=current, forecast=tuple(cis[h + 1:]),
                             reconfig=replace(problem.reconfig, horizon_h=horizon))
        plan = solve(step)
        if current is not None:
            total -= switch_cost(step, current, plan)
        total += predict(plan, step, partial_batches=True).objective
        current = plan
    return total


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    service=st.sampled_from(["yolo", "efficientnet"]),
    load=st.floats(0.2, 0.8),
    lam=st.floats(0.05, 0.9),
    cis=st.lists(st.floats(20.0, 800.0), min_size=3, max_size=5),
    load_s=st.sampled_from([10.0, 600.0]),
)
def test_pay_back_never_loses_to_always_switching(service, load, lam, cis, load_s):
    svc = SERVICES.get(service)
    gpus = (("gpu0", "A100-40GB"),)
    rate = default_rate_rps(svc, gpus, PERF, load)
    problem = PlanningProblem(svc, gpus, PERF, rate, base_p95_ms(svc, gpus, PERF, default_rate_rps(svc, gpus, PERF)),
                              lam=lam, batch_sizes=(1, 2), reconfig=ReconfigCost(model_load_s=load_s))
    # perfect forecast over the rest of the case (horizon 6 ≥ 5 steps)
    assert _model_total(problem, cis, True) >= _model_total(problem, cis, False) - 1e-9
