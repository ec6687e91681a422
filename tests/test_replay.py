"""Replay simulator: the batching queue against theory and the queueing model, energy and
carbon accounting, reconfiguration downtime."""

import numpy as np
import pytest

from configs.loader import load_services
from configs.units import carbon_g
from controller.planning.model import PlanningProblem, base_p95_ms, base_plan
from controller.planning.policies.interface import TrialResult
from controller.planning.queueing import p95_ms
from controller.planning.replay import Replay, SimConfig
from controller.planning.request_sim import replica_p95_sim, serve_replica
from models.performance import PerformanceModel

PERF = PerformanceModel.default()
SERVICES = load_services()


def test_md1_mean_wait_matches_pollaczek_khinchine():
    rng = np.random.default_rng(1)
    d, lam = 10.0, 0.06  # ms, per ms → ρ = 0.6
    arr = np.sort(rng.uniform(0, 2e6, rng.poisson(lam * 2e6)))
    lat, _ = serve_replica(arr, np.array([d]), np.array([0.0]))
    wait = lat.mean() - d
    assert wait == pytest.approx(0.6 * d / (2 * (1 - 0.6)), rel=0.05)


def test_batches_never_exceed_the_max_batch_and_energy_counts_batches():
    arr = np.zeros(10)  # ten simultaneous requests, batches of at most 4
    lat, energy = serve_replica(arr, np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 100.0]))
    assert sorted(set(lat)) == [4.0, 8.0, 10.0]  # 4, 4, then 2 requests
    assert energy == pytest.approx((100 * 4 + 100 * 4 + 1 * 2) / 1000.0)


@pytest.mark.parametrize("service_ms,load", [
    ((10.0,), 0.5), ((10.0,), 0.8),
    ((7.0, 7.6, 8.2, 8.8, 9.4, 10.0, 10.6, 11.2), 0.3),
    ((7.0, 7.6, 8.2, 8.8, 9.4, 10.0, 10.6, 11.2), 0.7),
    ((19.5, 21.3, 23.1, 24.9), 0.6),
])
def test_queueing_model_p95_within_10pct_of_simulation(service_ms, load):
    rate = load * len(service_ms) * 1000.0 / service_ms[-1]
    sim = replica_p95_sim(rate, service_ms, 600.0, np.random.default_rng(7))
    assert p95_ms(rate, service_ms) == pytest.approx(sim, rel=0.10)


def _problem(rate=None):
    svc = SERVICES.get("efficientnet")
    gpus = (("gpu0", "H100-80GB"), ("gpu1", "H100-80GB"))
    rate = rate or 0.5 * 2 * PERF.throughput_rps(svc.base.profile_key, "H100-80GB", 7, 1)
    return PlanningProblem(svc, gpus, PERF, rate, base_p95_ms(svc, gpus, PERF, rate))


class Fixed:
    name = "fixed"
    make_before_break = True

    def __init__(self, plans):
        self.plans = plans

    def decide(self, ctx):
        return self.plans[min(ctx.hour, len(self.plans) - 1)]


def test_base_energy_carbon_and_sla_share():
    problem = _problem()
    base = base_plan(problem)
    out = Replay(problem, [100.0, 400.0], Fixed([base]), SimConfig(window_s=60)).run()
    power = base.predicted.power_w
    assert out["energy_j"] == pytest.approx(power * 7200, rel=0.03)
    assert out["carbon_g"] == pytest.approx(carbon_g(power * 3600, 100, 1.5) + carbon_g(power * 3600, 400, 1.5), rel=0.03)
    assert out["hourly_carbon_g"][1] == pytest.approx(4 * out["hourly_carbon_g"][0], rel=0.05)
    # the SLA is Base's predicted p95: about 5 % of Base's simulated requests exceed it
    assert 3.0 < out["over_sla_pct"] < 7.0
    assert out["reconfigurations"] == 0 and out["exploration_requests"] == 0


def _other_plan(problem):
    from controller.planning.planner import solve_exact
    return solve_exact(problem.with_(lam=1.0))


def _two_slice_plan(problem, small_variant):
    from controller.planning.plan import GpuPlan, Plan, SliceAssignment
    from mig.types import Placement

    gpus = tuple(GpuPlan(gid, t, (SliceAssignment(Placement("4g.40gb", 0), "b7", 1, 0.35),
                                  SliceAssignment(Placement("3g.40gb", 4), small_variant, 1, 0.15)))
                 for gid, t in problem.gpus)
    return Plan(problem.service.name, gpus, problem.rate_rps)


def test_make_before_break_keeps_serving_while_stop_the_node_loses_requests():
    problem = _problem(rate=60.0)
    a, b = _two_slice_plan(problem, "b0"), _two_slice_plan(problem, "b4")  # only the 3g replicas change
    mbb = Replay(problem, [200.0, 200.0], Fixed([a, b]), SimConfig(window_s=30)).run()
    stop = Fixed([a, b])
    stop.make_before_break = False
    lost = Replay(problem, [200.0, 200.0], stop, SimConfig(window_s=30)).run()
    assert mbb["reconfigurations"] == lost["reconfigurations"] == 1
    # 10 s of model load: every request is lost while the nodes stop, none with MBB
    assert lost["lost_requests"] == pytest.approx(problem.rate_rps * 10, rel=0.25)
    assert mbb["lost_requests"] == 0
    assert lost["requests"] == pytest.approx(mbb["requests"], rel=0.03)


def test_live_trials_are_charged_as_exploration():
    problem = _problem()
    a, b = base_plan(problem), _other_plan(problem)
    seen: list[TrialResult] = []

    class Explorer(Fixed):
        def decide(self, ctx):
            seen.append(ctx.trial(b))
            return a

    out = Replay(problem, [200.0], Explorer([a]), SimConfig(window_s=30)).run()
    assert seen[0].duration_s == 30.0 and seen[0].requests > 0
    assert out["exploration_requests"] == pytest.approx(problem.rate_rps * 30, rel=0.25)
    assert out["reconfigurations"] == 1  # trial → base (the first deployment is not a reconfiguration)


@pytest.mark.parametrize("variant,batch,load", [("b5", 2, 0.3), ("b0", 8, 0.2), ("b0", 8, 0.9), ("b7", 4, 0.6)])
def test_energy_per_request_with_partial_batches_matches_the_simulator(variant, batch, load):
    from controller.planning.model import make_column
    from controller.planning.queueing import energy_per_request_j

    col = make_column(PERF, "H100-80GB", 3, SERVICES.get("efficientnet").variant(variant), batch, 60.0)
    rate = load * col.rmax_rps
    rng = np.random.default_rng(5)
    arr = np.sort(rng.uniform(0, 600e3, rng.poisson(rate * 600)))
    _, energy = serve_replica(arr, np.array(col.service_ms), np.array(col.busy_w))
    assert energy_per_request_j(rate, col.service_ms, col.busy_w) == pytest.approx(energy / len(arr), rel=0.02)
    full_batches = col.busy_w[-1] * col.service_ms[-1] / 1000.0 / batch
    assert energy / len(arr) > full_batches  # batches do not all fill
    # the MILP's linear coefficient is the energy at the replica's SLA capacity
    assert col.energy_j_per_req == pytest.approx(energy_per_request_j(col.rmax_rps, col.service_ms, col.busy_w),
                                                 rel=0.01)


def test_bursty_load_sized_for_bursts_holds_the_sla_where_the_mean_does_not():
    from controller.planning.policies import get_policy
    from controller.planning.replay_load import default_rate_rps

    svc, gpus = SERVICES.get("yolo"), (("gpu0", "A100-40GB"),)
    rate = default_rate_rps(svc, gpus, PERF)
    problem = PlanningProblem(svc, gpus, PERF, rate, base_p95_ms(svc, gpus, PERF, rate), batch_sizes=(1,))
    t = np.arange(3 * 3600)
    load = np.where((t % 60) < 30, 1.6, 0.4) * rate  # 30 s at 1.6x the mean, 30 s at 0.4x, every minute
    out = {name: Replay(problem, [300.0, 100.0, 300.0], get_policy(name), SimConfig(window_s=20), load).run()
           for name in ("base", "ours", "ours-mean", "hindsight")}
    assert out["ours"]["over_sla_pct"] < 5.0 < out["ours-mean"]["over_sla_pct"]
    assert out["hindsight"]["over_sla_pct"] < 5.0 < out["base"]["over_sla_pct"]
    # the replay offered the profile's requests, whatever the plan
    assert out["ours"]["requests"] == pytest.approx(load.sum(), rel=0.02)
