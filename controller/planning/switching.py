"""What changing plans costs, and the best sequence of plans over a number of steps.

One account of a switch, used three ways: the planner's pay-back (`ours`: a receding horizon
over the forecast), the `hindsight` policy (the whole trace, known in advance) and the replay
simulator, which charges a switch exactly as modelled here (transition time, the replicas that
keep serving meanwhile, the energy of loading new replicas). If the planner charged a switch
differently from what the replay measures, the pay-back could lose to always switching.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from controller.planning.model import PlanningProblem, capacity_shares, idle_power_w, predict, served_objective
from controller.planning.plan import Plan, diff_plans
from mig.placement import compute_slices_of


def transition_seconds(problem: PlanningProblem, old: Plan | None, new: Plan) -> float:
    """Wall time of the switch: GPUs reconfigure in parallel, each destroy/create then loads."""
    rc = problem.reconfig
    per_gpu = [c.mig_ops * rc.mig_op_s + (rc.model_load_s if c.starts else 0.0)
               for c in diff_plans(old, new).values()]
    return max(per_gpu, default=0.0)


def interim_plan(problem: PlanningProblem, old: Plan, new: Plan) -> Plan | None:
    """What serves while `old` becomes `new` (make-before-break): the replicas of `old` that are
    not stopped, traffic in proportion to their SLA capacity; None when none is left (every
    request arriving meanwhile is lost)."""
    down = {(gid, s.placement) for gid, c in diff_plans(old, new).items() for s in c.stop}
    return serving_subset(problem, old, down)


def serving_subset(problem: PlanningProblem, plan: Plan, down: set) -> Plan | None:
    """`plan` without the replicas in `down` ((gpu_id, placement) pairs), shares ∝ SLA capacity."""
    alive = [(g, s) for g, s in plan.replicas() if (g.gpu_id, s.placement) not in down]
    if not alive:
        return None
    shares = capacity_shares(problem, [(g.gpu_type, s) for g, s in alive])
    share = {(g.gpu_id, s.placement): x for (g, s), x in zip(alive, shares)}
    gpus = tuple(replace(g, slices=tuple(replace(s, share=share[(g.gpu_id, s.placement)])
                                         for s in g.slices if (g.gpu_id, s.placement) in share))
                 for g in plan.gpus)
    return replace(plan, gpus=gpus)


def load_power_w(problem: PlanningProblem, old: Plan | None, new: Plan) -> float:
    """Power drawn while the new replicas of the switch load (batch-1 busy power of each)."""
    types = {g.gpu_id: g.gpu_type for g in new.gpus}
    return sum(problem.perf.busy_power_w(problem.service.variant(s.variant).profile_key, types[gid],
                                         compute_slices_of(s.placement.profile), 1)
               for gid, c in diff_plans(old, new).items() for s in c.starts)


def switch_cost(problem: PlanningProblem, old: Plan, new: Plan) -> float:
    """Objective-hours lost by switching, compared with `new` already being in place.

    For the transition the interim replicas serve instead of `new` (requests that find no
    replica count at accuracy 0), and each new replica draws its busy power for `model_load_s`
    while it loads. Both at the problem's carbon intensity, and at the traffic the transition
    meets: `switch_rate_rps` where the problem has it (a switch made now, priced at the newest
    measured rate), else the step's mean rate.
    """
    t_h = transition_seconds(problem, old, new) / 3600.0
    if t_h == 0.0:
        return 0.0
    if problem.switch_rate_rps is not None:  # the traffic the transition meets, normalised like the step
        problem = problem.with_(mean_rate_rps=min(problem.switch_rate_rps, problem.rate_rps), switch_rate_rps=None,
                                reference_rate_rps=problem.reference_rate_rps or problem.mean_rps)
    obj = served_objective(problem)
    interim = interim_plan(problem, old, new)
    idle = idle_power_w(problem)
    during = predict(interim, problem).objective if interim else obj.value(idle, 0.0)
    load_h = problem.reconfig.model_load_s / 3600.0
    return t_h * (predict(new, problem).objective - during) - obj.power_coef * load_power_w(problem, old, new) * load_h


def best_schedule(values: Sequence[Sequence[float]], costs: Sequence[Sequence[float]],
                  start: Sequence[float]) -> list[int]:
    """The candidate to serve in each step maximising Σ values − Σ switch costs (dynamic programme).

    `values[k][j]`: objective-hours of candidate j in step k (−inf: it cannot serve that step);
    `costs[i][j]`: cost of switching from i to j; `start[j]`: cost of having j in the first step.
    Ties keep the lower index, so callers list the deployed plan first (no switch on a tie).
    """
    return best_schedule_by_step(values, [costs] * len(values), start)


def best_schedule_by_step(values: Sequence[Sequence[float]], costs: Sequence[Sequence[Sequence[float]]],
                          start: Sequence[float]) -> list[int]:
    """`best_schedule` where a switch costs what it costs in the step it happens in (`costs[k][i][j]`:
    switching from i to j to serve step k; the carbon intensity and rate of that step price it)."""
    n = len(start)
    best = [v - c for v, c in zip(values[0], start)]
    back: list[list[int]] = []
    for row, cost in zip(values[1:], costs[1:]):
        nxt, arg = [], []
        for j in range(n):
            i = max(range(n), key=lambda i: (best[i] - cost[i][j], -i))
            nxt.append(row[j] + best[i] - cost[i][j])
            arg.append(i)
        best, back = nxt, back + [arg]
    if not any(math.isfinite(b) for b in best):
        raise ValueError("no candidate can serve every step")
    j = max(range(n), key=lambda j: (best[j], -j))
    path = [j]
    for arg in reversed(back):
        j = arg[j]
        path.append(j)
    return path[::-1]
