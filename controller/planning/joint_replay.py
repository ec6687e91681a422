"""Several services on one cluster replayed over a carbon trace: joint planning against a static split.

Policies (`JOINT_POLICIES`):
- `ours` / `ours-myopic` (joint): one joint decision per step (`joint.solve_joint`) over all the
  GPUs, each service's part of it built exactly as the single-service policy builds its problem
  (carbon forecast, pay-back horizon, the rate its load forecast says to size for; `ours-myopic`
  adopts every optimum). The plans do not depend on what the simulation measures (no live
  trials; the arrivals a live loop would count are drawn from each service's load profile
  independently of the plans, `replay.counted`), so the whole sequence is decided first, then
  each service's traffic is simulated by the single-service `Replay` on its view of it
  (`joint.service_view`): its replicas, the other services' slices idle. Each
  service is charged its `idle_share` of the idle power, so the services' energies add up to the
  cluster's with idle power counted once.
- `static-split`, `clover-sa`, `base`: the GPUs divided up front between the services in
  proportion to their Base's need (`static_split`, the rule that also splits idle power in the
  joint problem), then the single-service policy (`ours`, `clover-sa`, Base) on each part alone.
  Base on the static parts is the reference of every saving and accuracy loss.

Each service plays its own load (`loads`: a rate per `SimConfig.bin_s`, as `Replay` takes it, or
None for its problem's constant rate) in every policy, so all policies meet the same traffic.
Joint plans are decided at the start of each step; the re-plans a single-service `ours` makes
within a step when its load leaves the band (`load_forecast.replan_due`) are not made jointly.

A policy's result is one row for the cluster and one per service (`JointRun`); the cluster's
accuracy and over-SLA share are request-weighted, its objective the traffic-weighted sum of the
services' Clover objectives, each with the cluster's carbon against the cluster's Base (as
`replay.compare_to_base` scores one service) and the service's accuracy against its own Base.
The cluster's carbon is used because a service's carbon depends on how idle power is attributed,
which differs between a joint plan (`idle_share`) and a static part (its whole GPUs, rounded to
whole GPUs): a service's own saving is shown, but only the cluster's compares policies fairly.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from configs.schema import Service
from configs.units import carbon_g
from controller.planning.joint import idle_shares, joint_problem, service_view, solve_joint
from controller.planning.model import PlanningProblem, ReconfigCost, base_p95_ms
from controller.planning.objective import REFERENCE_CI, REFERENCE_PUE, clover_score
from controller.planning.plan import Plan, diff_plans
from controller.planning.policies.interface import HourContext, Policy, TrialResult
from controller.planning.policies.ours import OursMyopicPolicy, OursPolicy
from controller.planning.policy_runs import add_savings, compare_to_base, run_policies
from controller.planning.replay import Replay, SimConfig, counted, for_load, load_history, load_profile, step_problem
from controller.planning.replay_load import default_rate_rps

Gpus = tuple[tuple[str, str], ...]
Row = dict[str, float]
Loads = tuple[np.ndarray | None, ...]  # per service: expected rate per bin, None for a constant rate

JOINT: dict[str, type[OursPolicy]] = {"ours": OursPolicy, "ours-myopic": OursMyopicPolicy}
SPLIT: dict[str, str] = {"static-split": "ours", "clover-sa": "clover-sa", "base": "base"}  # → single-service policy
JOINT_POLICIES = (*JOINT, *SPLIT)
# what a service's row keeps of the replay's summary (all numbers)
ROW_KEYS = ("carbon_g", "energy_j", "accuracy", "p95_ms", "sla_ms", "over_sla_pct", "requests", "lost_requests",
            "reconfigurations", "layout_changes", "solve_ms_p50", "carbon_saving_pct", "accuracy_loss_pct", "objective")


@dataclass(frozen=True)
class JointRun:
    """One policy's replay of several services: the cluster's row, each service's row and plans."""

    cluster: Row
    services: dict[str, Row]
    plans: dict[str, list[Plan]]  # per service, the plan it served each step (its view, for joint policies)
    hourly_carbon_g: list[float]  # the cluster's carbon in each step


def default_joint_rate_rps(service: Service, gpus: Gpus, perf: object, n_services: int) -> float:
    """50 % of Base's capacity on an equal share of the cluster (1/n of its GPUs): with every rate
    defaulted the static split is even and each service's Base runs half loaded, as one service's
    default rate does on the whole cluster."""
    return default_rate_rps(service, gpus, perf, fraction=0.5 / n_services)


def static_split(problems: tuple[PlanningProblem, ...]) -> tuple[Gpus, ...]:
    """The cluster's GPUs (those of the first problem) divided between the services in proportion
    to their Base's need, largest remainder, at least one GPU each, in the cluster's order.

    The same rule charges idle power in the joint problem (`joint.idle_shares`), so the baseline
    and the joint plan start from the same division of the cluster."""
    gpus = problems[0].gpus
    if len(gpus) < len(problems):
        raise ValueError(f"{len(gpus)} GPU(s) cannot be split between {len(problems)} services: "
                         "a static split needs at least one GPU per service")
    quotas = [share * len(gpus) for share in idle_shares(problems)]
    counts = [max(1, math.floor(q)) for q in quotas]
    while sum(counts) > len(gpus):  # the one-GPU minimum took GPUs the quotas did not leave
        k = max((i for i, c in enumerate(counts) if c > 1), key=lambda i: counts[i] - quotas[i])
        counts[k] -= 1
    while sum(counts) < len(gpus):
        k = max(range(len(counts)), key=lambda i: quotas[i] - counts[i])
        counts[k] += 1
    bounds = list(itertools.accumulate(counts, initial=0))
    return tuple(gpus[a:b] for a, b in itertools.pairwise(bounds))


def build_problems(services: tuple[Service, ...], gpus: Gpus, perf: object, rates: tuple[float, ...],
                   slas: tuple[float | None, ...], lams: tuple[float, ...], batch_sizes: tuple[int, ...],
                   reconfig: ReconfigCost) -> tuple[PlanningProblem, ...]:
    """One problem per service on the whole cluster. A missing SLA is Base's predicted p95 on the
    service's static part: the SLA Base itself delivers, the same for every policy."""
    probes = tuple(PlanningProblem(s, gpus, perf, r, 1.0) for s, r in zip(services, rates))
    parts = static_split(probes) if len(services) > 1 else (gpus,)
    out = []
    for probe, part, sla, lam in zip(probes, parts, slas, lams):
        if sla is None:
            sla = base_p95_ms(probe.service, part, perf, probe.rate_rps)
            if sla == math.inf:
                raise ValueError(f"Base cannot serve {probe.rate_rps:g} req/s of {probe.service.name} on its "
                                 f"{len(part)} GPU(s) of the static split: give its SLA or a lower rate")
        out.append(probe.with_(sla_ms=sla, lam=lam, batch_sizes=batch_sizes, reconfig=reconfig))
    return tuple(out)


class PlannedViews(Policy):
    """Serves one service's view of precomputed joint plans, step by step (a joint decision is
    made for all services at once, outside any one service's replay)."""

    def __init__(self, plans: list[Plan]) -> None:
        self.plans = plans

    def decide(self, ctx: HourContext) -> Plan:
        return service_view(self.plans[ctx.hour], ctx.problem)


def _no_trial(plan: Plan) -> TrialResult:
    raise RuntimeError("the joint planner runs no live trials")


def joint_plans(problems: tuple[PlanningProblem, ...], trace: list[float], config: SimConfig,
                policy: str, loads: Loads | None = None) -> tuple[list[Plan], list[float]]:
    """The joint plan of every step and its solve time (ms): each service's part of the decision
    is the problem its single-service policy would build (`OursPolicy.problem_for`) from its own
    load, counted as its `Replay` counts it (`loads`, None: constant rates), the current plan
    the previous step's."""
    loads = loads or (None,) * len(problems)
    problems = tuple(for_load(p, load) for p, load in zip(problems, loads))
    counts = [None if load is None else counted(load_profile(p, len(trace), config, load), config)
              for p, load in zip(problems, loads)]
    deciders = [JOINT[policy]() for _ in problems]
    mean_ci = float(np.mean(trace))
    plans: list[Plan] = []
    current: Plan | None = None
    for h, ci in enumerate(trace):
        parts = []
        for p, decider, c in zip(problems, deciders, counts):
            problem = step_problem(p, trace, h, config, current)
            history = None if c is None else load_history(c, h * config.step_s, config)
            parts.append(decider.problem_for(
                HourContext(h, ci, problem.forecast, mean_ci, problem, current, _no_trial, history)))
        current = solve_joint(joint_problem(tuple(parts), current=current))
        plans.append(current)
    return plans, [p.solve_ms for p in plans]


def _row(summary: dict, gpus: int) -> Row:
    return {"gpus": float(gpus), **{k: float(summary[k]) for k in ROW_KEYS}}


def _changed_steps(plans: list[list[Plan]]) -> int:
    """Steps at which any service's deployment changed (a share-only change is none)."""
    return sum(any(diff_plans(ps[h - 1], ps[h]) for ps in plans) for h in range(1, len(plans[0])))


def _cluster(rows: list[Row], gpus: int, plans: list[list[Plan]], solve_ms: float) -> Row:
    requests = sum(r["requests"] for r in rows)
    return {
        "gpus": float(gpus),
        "carbon_g": sum(r["carbon_g"] for r in rows),
        "energy_j": sum(r["energy_j"] for r in rows),
        "accuracy": sum(r["accuracy"] * r["requests"] for r in rows) / requests,
        "over_sla_pct": sum(r["over_sla_pct"] * r["requests"] for r in rows) / requests,
        "requests": requests,
        "lost_requests": sum(r["lost_requests"] for r in rows),
        "reconfigurations": float(_changed_steps(plans)),
        "solve_ms_p50": solve_ms,
    }


def replay_joint(problems: tuple[PlanningProblem, ...], trace: list[float], names: list[str],
                 config: SimConfig, loads: Loads | None = None) -> dict[str, JointRun]:
    """Replay the named policies (`JOINT_POLICIES`; `base` always, as the reference) for the
    services of `problems` (one per service on the whole cluster at its mean rate, see
    `build_problems`), each service playing its load of `loads` (None: constant rates)."""
    loads = loads or (None,) * len(problems)
    unknown = [n for n in names if n not in JOINT_POLICIES]
    if unknown:
        raise KeyError(f"unknown policy {', '.join(unknown)} for several services; known: {', '.join(JOINT_POLICIES)}")
    shared = joint_problem(problems)
    parts = static_split(problems)
    split_names = [SPLIT[n] for n in SPLIT if n in names or n == "base"]
    split = [run_policies(p.with_(gpus=part), trace, split_names, config, load=load)
             for p, part, load in zip(problems, parts, loads)]
    rows: dict[str, list[Row]] = {}
    plans: dict[str, list[list[Plan]]] = {}
    solve: dict[str, float] = {}
    hourly: dict[str, list[list[float]]] = {}  # per policy, each service's carbon per step
    for name in (n for n in SPLIT if n in names or n == "base"):
        runs = [by_policy[SPLIT[name]] for by_policy in split]
        rows[name] = [_row(r.summary, len(part)) for r, part in zip(runs, parts)]
        plans[name] = [r.plans for r in runs]
        hourly[name] = [r.summary["hourly_carbon_g"] for r in runs]
        solve[name] = sum(r.summary["solve_ms_p50"] for r in runs)  # each step decides every part
    for name in (n for n in JOINT if n in names):
        joint, solve_ms = joint_plans(shared.problems, trace, config, name, loads)
        replays = [Replay(p, trace, PlannedViews(joint), config, load) for p, load in zip(shared.problems, loads)]
        summaries = [rp.run() for rp in replays]
        for s, by_policy, p in zip(summaries, split, problems):
            compare_to_base({name: s}, by_policy["base"].summary, p.lam)
        rows[name] = [_row(s, len(p.gpus)) for s, p in zip(summaries, problems)]
        plans[name] = [rp.plans for rp in replays]
        hourly[name] = [s["hourly_carbon_g"] for s in summaries]
        solve[name] = float(np.median(solve_ms))
    out = {}
    for name in [n for n in JOINT_POLICIES if n in rows]:
        cluster = _cluster(rows[name], len(shared.problems[0].gpus), plans[name], solve[name])
        out[name] = JointRun(cluster, dict(zip(shared.names, rows[name])), dict(zip(shared.names, plans[name])),
                             [sum(step) for step in zip(*hourly[name])])
    base = out["base"]
    base_ref = carbon_g(base.cluster["energy_j"], REFERENCE_CI, REFERENCE_PUE)
    for run in out.values():
        add_savings(run.cluster, base.cluster)
        run.cluster["objective"] = sum(
            w * clover_score(p.lam, run.cluster["carbon_g"], run.services[p.service.name]["accuracy"], base_ref,
                             base.services[p.service.name]["accuracy"])
            for w, p in zip(shared.weights, problems))
    return out
