"""Exact carbon-aware planner: a HiGHS MILP over slice-size multisets and per-slice columns.

Formulation (proof of exactness in docs/planner.md). For each GPU type t with n_t GPUs:
  y[t,m] ∈ ℤ≥0   GPUs of type t using slice multiset m (of the maximal layouts), Σ_m y = n_t
  x[c]   ∈ ℤ≥0   replicas of column c = (t, slice size s, variant, batch)
  r[c]   ≥ 0     requests/s routed to column c's replicas in total
  Σ_{c of (t,s)} x[c] ≤ Σ_m count_m(s)·y[t,m]      (replicas need slices of their size)
  r[c] ≤ rmax[c]·x[c]                              (each replica's p95 ≤ SLA, split evenly)
  Σ_c r[c] = R
  maximise  const + power_coef·(Σ idle + Σ_c e[c]·r[c]) + accuracy_coef·Σ_c acc[c]·r[c]/R
The coefficients come from controller/planning/objective.py (the only place λ is applied).

Beyond Clover (`solve` with `problem.current` and `reconfig.horizon_h` > 0): a switch is made
only where it pays back over the forecast horizon (switching costs in controller/planning/switching.py):
the plan adopted is the first step of the best schedule over the horizon among the current plan
(re-routed), the optimum now and the optimum of each forecast step.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

import highspy

from controller.planning.model import (
    Column,
    PlanningProblem,
    columns,
    multisets,
    objective_for,
    predict,
    reroute,
)
from controller.planning.plan import GpuPlan, Plan, SliceAssignment, diff_plans, plan_changed
from controller.planning.switching import best_schedule_by_step, switch_cost
from mig.placement import compute_slices_of, layout_slices, whole_gpu
from mig.types import Layout

S = TypeVar("S")  # one step of a planning horizon: a PlanningProblem, or a JointProblem


class InfeasibleError(ValueError):
    """No plan serves the rate within the SLA on these GPUs."""


def solve(problem: PlanningProblem) -> Plan:
    """The optimal plan (and, with a current plan and a horizon, whether to switch to it)."""
    t0 = time.perf_counter()
    best = solve_exact(problem)
    plan = best
    if problem.current is not None and problem.reconfig.horizon_h > 0:
        plan = _pay_back_choice(problem, best)
    return replace(plan, solve_ms=(time.perf_counter() - t0) * 1000.0)


def solve_exact(problem: PlanningProblem) -> Plan:
    """The MILP optimum for the problem's current carbon intensity (no switching cost)."""
    y, sol = solve_milp((problem,))
    plan = decode(problem.gpus, problem.current, y, sol, (problem.rate_rps,), problem.service.name,
                  problem.carbon_intensity, held=dict(problem.held))
    return replace(plan, predicted=predict(plan, problem))


Solution = list[tuple[Column, int, float]]  # (column, replicas, req/s routed to them) of one service


def solve_milp(problems: tuple[PlanningProblem, ...], weights: tuple[float, ...] = (1.0,),
               min_accuracy: tuple[float | None, ...] = (None,)) -> tuple[dict, list[Solution]]:
    """The MILP over one or several services sharing the problems' GPUs (controller/planning/joint.py).

    Every service has its own columns, rate equation and objective coefficients (its own λ and
    Base); the slice constraint of each (GPU type, slice size) counts the replicas of all
    services. The objective is Σ_s weights[s]·(service s's objective), so one service with weight
    1 is the single-service MILP exactly (the same model, built in the same order). A service's
    `min_accuracy` is a linear constraint on its request-weighted accuracy."""
    first = problems[0]
    objs = [objective_for(p) for p in problems]
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 1e-9)
    h.setOptionValue("mip_abs_gap", 1e-12)
    h.setOptionValue("threads", 1)
    counts: dict[str, int] = defaultdict(int)
    for _, t in first.gpus:
        counts[t] += 1
    y: dict[tuple[str, tuple[int, ...]], object] = {}
    cols: list[list[tuple[Column, object, object]]] = [[] for _ in problems]
    for t, n in sorted(counts.items()):
        kept = held_multisets(first, t)
        maximal = multisets(t)
        ms = list(dict.fromkeys([*maximal, *kept]))  # a held layout need not be maximal
        for m in ms:
            y[t, m] = h.addVariable(lb=kept.get(m, 0), ub=n if m in maximal else kept[m],
                                    type=highspy.HighsVarType.kInteger)
        h.addConstr(sum(y[t, m] for m in ms) == n)
        by_size: dict[int, list] = defaultdict(list)
        for k, problem in enumerate(problems):
            for c in columns(problem, t):
                most = n * max(m.count(c.slices) for m in ms)
                if most == 0:
                    continue
                x = h.addVariable(lb=0, ub=most, type=highspy.HighsVarType.kInteger)
                r = h.addVariable(lb=0, ub=min(problem.rate_rps, c.rmax_rps * most))
                h.addConstr(r - c.rmax_rps * x <= 0)
                by_size[c.slices].append(x)
                cols[k].append((c, x, r))
        for s, xs in by_size.items():
            h.addConstr(sum(xs) - sum(m.count(s) * y[t, m] for m in ms) <= 0)
    for problem, own, floor in zip(problems, cols, min_accuracy):
        if not own:
            raise InfeasibleError(_infeasible_msg(problem))
        h.addConstr(sum(r for _, _, r in own) == problem.rate_rps)
        if floor is not None:
            h.addConstr(sum(c.accuracy * r for c, _, r in own) >= floor * problem.rate_rps)
    # With λ near 0 or 1 one term of Clover's objective is ~1e-5 of the other, and differences
    # in it fall below HiGHS's absolute tolerances: scale so the smaller term is O(1).
    coef = [[(w * (o.power_coef * c.energy_j_per_req), w * (o.accuracy_coef * c.accuracy / p.rate_rps))
             for c, _, _ in own] for p, o, w, own in zip(problems, objs, weights, cols)]
    terms = [abs(t) for row in coef for pair in row for t in pair if t]
    scale = min(1.0 / min(terms), 1e6) if terms else 1.0
    h.maximize(sum(scale * (e + a) * r for row, own in zip(coef, cols) for (e, a), (_, _, r) in zip(row, own)))
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise InfeasibleError(_infeasible_msg(*problems))
    sol_y = {k: int(round(h.val(v))) for k, v in y.items()}
    sols = []
    for problem, own in zip(problems, cols):
        got = [(c, int(round(h.val(x))), max(0.0, h.val(r))) for c, x, r in own]
        sols.append([(c, n, r) for c, n, r in got if n > 0 and r > 1e-9 * problem.rate_rps])
    return sol_y, sols


def held_multisets(problem: PlanningProblem, gpu_type: str) -> dict[tuple[int, ...], int]:
    """How many GPUs of this type must keep each slice multiset (their held layouts)."""
    types = dict(problem.gpus)
    out: dict[tuple[int, ...], int] = defaultdict(int)
    for gid, layout in problem.held:
        if types.get(gid) == gpu_type:
            out[layout_slices(layout)] += 1
    return dict(out)


def _infeasible_msg(*problems: PlanningProblem) -> str:
    wanted = " and ".join(f"{p.rate_rps:g} req/s of {p.service.name!r} with p95 ≤ {p.sla_ms:g} ms" for p in problems)
    return (f"no configuration of {len(problems[0].gpus)} GPU(s) serves {wanted}: lower --rate, raise --sla-ms "
            f"or add GPUs")


def decode(gpus: tuple[tuple[str, str], ...], current: Plan | None, y: dict, sols: list[Solution],
           rates: tuple[float, ...], name: str, carbon_intensity: float,
           services: tuple[str, ...] = ("",), held: Mapping[str, Layout] | None = None) -> Plan:
    """Turn counts into per-GPU slices, keeping the current plan's layouts and replicas where
    the counts allow (fewer MIG operations and model loads for the control loop). A GPU left
    without replicas keeps its current layout (or is one whole-GPU instance): re-partitioning an
    idle GPU would cost MIG operations and gain nothing, since its idle power does not depend on it.
    A `held` GPU gets its held layout (the counts include it, see `solve_milp`).

    `sols[k]` are the columns of service `services[k]` (rate `rates[k]`; "" tags no service: a
    single-service plan); shares are fractions of each service's own rate."""
    current_by_id = {g.gpu_id: g for g in current.gpus} if current else {}
    held = held or {}
    out: list[GpuPlan] = []
    for t in sorted({t for _, t in gpus}):
        ms = multisets(t)
        pool = {m: k for (tt, m), k in y.items() if tt == t and k > 0}
        reps: dict[int, list[tuple[str, str, int, float]]] = defaultdict(list)
        for svc, sol, rate in zip(services, sols, rates):
            for c, n, r in sol:
                if c.gpu_type == t:
                    reps[c.slices] += [(svc, c.variant, c.batch, r / n / rate)] * n
        ids = [gid for gid, tt in gpus if tt == t]
        chosen: dict[str, tuple[int, ...]] = {}
        for gid in sorted(ids, key=lambda gid: gid not in held):  # held GPUs first, then keep the current multiset
            g = current_by_id.get(gid)
            m = layout_slices(held[gid]) if gid in held else layout_slices(g.layout) if g else None
            if m is not None and pool.get(m, 0) > 0:
                chosen[gid] = m
                pool[m] -= 1
        rest = [m for m, k in pool.items() for _ in range(k)]
        for gid in ids:
            if gid not in chosen:
                chosen[gid] = rest.pop(0)
        for gid in ids:
            g = current_by_id.get(gid)
            m = chosen[gid]
            if gid in held:
                layout = list(held[gid])
            else:
                layout = [s.placement for s in g.slices] if g and layout_slices(g.layout) == m else list(ms[m])
            old = {s.placement: (s.variant, s.batch) for s in g.slices} if g else {}
            slices: list[SliceAssignment | None] = [None] * len(layout)
            for i, p in enumerate(layout):  # same replica on the same slice first (variants name their service)
                pool_s = reps[compute_slices_of(p.profile)]
                for j, (svc, v, b, sh) in enumerate(pool_s):
                    if (v, b) == old.get(p):
                        slices[i] = SliceAssignment(p, v, b, sh, svc)
                        pool_s.pop(j)
                        break
            for i, p in enumerate(layout):
                if slices[i] is None:
                    pool_s = reps[compute_slices_of(p.profile)]
                    if pool_s:
                        svc, v, b, sh = pool_s.pop(0)
                        slices[i] = SliceAssignment(p, v, b, sh, svc)
                    else:
                        slices[i] = SliceAssignment(p, None, 1, 0.0)
            if all(x.variant is None for x in slices) and gid not in held:  # idle: any layout serves; change none
                slices = [SliceAssignment(x.placement, None, 1, 0.0) for x in g.slices] if g else \
                    [SliceAssignment(p, None, 1, 0.0) for p in whole_gpu(t)]
            out.append(GpuPlan(gid, t, tuple(slices)))
    order = {gid: i for i, (gid, _) in enumerate(gpus)}
    out.sort(key=lambda g: order[g.gpu_id])
    return Plan(name, tuple(out), sum(rates), carbon_intensity)


# ---- reconfiguration-cost-aware choice ----------------------------------------------------
def _pay_back_choice(problem: PlanningProblem, best: Plan) -> Plan:
    """Receding horizon over the forecast (docs/planner.md, "Pay-back") for one service.

    Plans are compared with the energy of the batches that actually form (`partial_batches`),
    since the MILP's full-batch energy understates what a switch saves or costs, and a switch
    is charged what the replay simulator charges (controller/planning/switching.py)."""
    return pay_back(problem.current, best, horizon(problem), problem.reconfig.step_s / 3600.0,
                    optimum=solve_exact, reroute_=reroute,
                    value=lambda plan, step: predict(plan, step, partial_batches=True).objective,
                    cost=switch_cost)


def pay_back(current: Plan, best: Plan, steps: Sequence[S], hours: float, *, optimum: Callable[[S], Plan],
             reroute_: Callable[[Plan, S], Plan | None], value: Callable[[Plan, S], float],
             cost: Callable[[S, Plan, Plan], float]) -> Plan:
    """The first step of the best schedule of plans over `steps` (now, then the forecast),
    switching costs included, among the current plan (re-routed), the optimum now (`best`)
    and the optimum of each forecast step; one service or several (controller/planning/joint.py).

    `value(plan, step)`: objective per hour of a routed plan; `cost(step, a, b)`: objective-hours
    lost switching from a to b to serve `step` (priced at that step's carbon intensity and rate,
    as it will be); `hours`: the length of a step."""
    keep = reroute_(current, steps[0])
    if keep is not None and not diff_plans(current, best):
        return best
    candidates = [current, best]
    for step in steps[1:]:
        try:
            cand = optimum(step)
        except InfeasibleError:
            continue
        if all(plan_changed(c, cand) for c in candidates):
            candidates.append(cand)
    values = []
    for step in steps:
        row = []
        for c in candidates:
            routed = reroute_(c, step)
            row.append(-math.inf if routed is None else value(routed, step) * hours)
        if not any(math.isfinite(v) for v in row):
            break  # no candidate serves this step's forecast rate: decide on the steps before it
        values.append(row)
    costs = [[[0.0 if i == j else cost(step, a, b) for j, b in enumerate(candidates)] for i, a in enumerate(candidates)]
             for step in steps[:len(values)]]
    chosen = candidates[best_schedule_by_step(values, costs, costs[0][0])[0]]
    if chosen is best:
        return best
    return keep if chosen is current else reroute_(chosen, steps[0])


def horizon(problem: PlanningProblem) -> list[PlanningProblem]:
    """One problem per step of the horizon: now, then the forecast carbon intensity and rate;
    beyond a forecast the last value persists (no forecast: nothing is expected to change)."""
    cis = (problem.carbon_intensity, *problem.forecast)
    rates = (problem.rate_rps, *problem.rate_forecast)
    served = problem.mean_rps / problem.rate_rps  # the mean keeps its ratio to the planned rate
    # so does the traffic a switch meets (switches are made at the same point of every step)
    meets = None if problem.switch_rate_rps is None else problem.switch_rate_rps / problem.rate_rps
    out = [problem]
    for k in range(1, max(1, problem.reconfig.horizon_h)):
        ci, rate = cis[min(k, len(cis) - 1)], rates[min(k, len(rates) - 1)]
        out.append(problem.with_(carbon_intensity=ci, rate_rps=rate,
                                 mean_rate_rps=None if problem.mean_rate_rps is None else rate * served,
                                 switch_rate_rps=None if meets is None else rate * meets))
    return out
