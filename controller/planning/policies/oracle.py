"""Oracle: exhaustive enumeration of every per-GPU configuration under the same model.

Independent of the MILP: it lists, for each GPU, every slice-size multiset of the maximal
layouts and every assignment of (variant, batch) or idle to its slices, takes every
combination over the GPUs, and routes the traffic optimally over each combination's
replicas (planning_model.route, the LP given the discrete choices). The only reduction is
exact: a column dominated by another of the same slice size (≥ accuracy, ≤ energy per
request, ≥ SLA capacity) can always be swapped for it without loss, so it is dropped, and
slices of equal size (and GPUs of equal type) are interchangeable, so multisets are
enumerated instead of sequences. Feasible only for small cases: raises OracleTooLarge.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict

from controller.planning.joint import JointProblem, reroute_joint
from controller.planning.model import (
    Column,
    PlanningProblem,
    columns,
    multisets,
    objective_for,
    reroute,
    slice_profiles,
)
from controller.planning.plan import GpuPlan, Plan, SliceAssignment
from controller.planning.policies.interface import HourContext, Policy


class OracleTooLarge(RuntimeError):
    pass


def _undominated(cols: list[Column]) -> list[Column]:
    keep = []
    for c in cols:
        dominated = any(
            o is not c and o.slices == c.slices and o.accuracy >= c.accuracy and o.energy_j_per_req <= c.energy_j_per_req
            and o.rmax_rps >= c.rmax_rps and (o.accuracy, -o.energy_j_per_req, o.rmax_rps) != (c.accuracy, -c.energy_j_per_req, c.rmax_rps)
            for o in cols
        )
        duplicate = any(o.slices == c.slices and (o.accuracy, o.energy_j_per_req, o.rmax_rps) == (c.accuracy, c.energy_j_per_req, c.rmax_rps)
                        for o in keep)
        if not dominated and not duplicate:
            keep.append(c)
    return keep


def gpu_configs(problem: PlanningProblem, gpu_type: str) -> list[tuple]:
    """Every per-GPU configuration: (layout, tuple of Column-or-None per slice)."""
    return _configs(gpu_type, _undominated(columns(problem, gpu_type)), lambda c: c.slices)


def _configs(gpu_type: str, items: list, size_of) -> list[tuple]:
    """Every (layout, one item or None per slice) of the GPU type's multisets; `size_of(item)` is
    the slice size an item needs."""
    by_size = defaultdict(list)
    for c in items:
        by_size[size_of(c)].append(c)
    out = []
    for m, layout in multisets(gpu_type).items():
        sizes = sorted(set(m))
        per_size = [list(itertools.combinations_with_replacement([None, *by_size[s]], m.count(s))) for s in sizes]
        for choice in itertools.product(*per_size):
            assign = {s: list(ch) for s, ch in zip(sizes, choice)}
            slots = []
            for p in layout:
                s = next(k for k in sizes if _profile_of(gpu_type, k) == p.profile)
                slots.append(assign[s].pop())
            out.append((layout, tuple(slots)))
    return out


def _profile_of(gpu_type: str, slices: int) -> str:
    return slice_profiles(gpu_type)[slices][0]


def solve_oracle(problem: PlanningProblem, limit: int = 300_000) -> Plan:
    types = defaultdict(list)
    for gid, t in problem.gpus:
        types[t].append(gid)
    per_type = {t: gpu_configs(problem, t) for t in types}
    size = math.prod(math.comb(len(per_type[t]) + len(ids) - 1, len(ids)) for t, ids in types.items())
    if size > limit:
        raise OracleTooLarge(f"oracle would enumerate {size} combinations (limit {limit})")
    obj = objective_for(problem)
    rate = problem.rate_rps
    # per configuration: (value per req/s, capacity) of its replicas
    items = {t: [[(obj.power_coef * c.energy_j_per_req + obj.accuracy_coef * c.accuracy / rate, c.rmax_rps)
                  for c in slots if c is not None] for _, slots in cfgs] for t, cfgs in per_type.items()}
    best, best_val = None, -math.inf
    choices = [list(itertools.combinations_with_replacement(range(len(per_type[t])), len(ids))) for t, ids in types.items()]
    for combo in itertools.product(*choices):
        reps = sorted((it for t, picks in zip(types, combo) for k in picks for it in items[t][k]), reverse=True)
        left, val = rate, 0.0
        for v, cap in reps:
            take = min(left, cap)
            val += v * take
            left -= take
            if left <= 0:
                break
        if left > 1e-9 * rate:
            continue
        if val > best_val:
            best, best_val = combo, val
    if best is None:
        raise ValueError("oracle: no configuration meets the SLA at this rate")
    gpus = []
    for (t, ids), picks in zip(types.items(), best):
        for gid, k in zip(ids, picks):
            layout, slots = per_type[t][k]
            gpus.append(GpuPlan(gid, t, tuple(SliceAssignment(p, c.variant if c else None, c.batch if c else 1, 0.0)
                                              for p, c in zip(layout, slots))))
    order = {gid: i for i, (gid, _) in enumerate(problem.gpus)}
    plan = Plan(problem.service.name, tuple(sorted(gpus, key=lambda g: order[g.gpu_id])), rate, problem.carbon_intensity)
    routed = reroute(plan, problem)
    assert routed is not None
    return routed


class OraclePolicy(Policy):
    """Exhaustive search with perfect knowledge of the model, every hour (small cases only)."""

    name = "oracle"

    def decide(self, ctx: HourContext) -> Plan:
        return solve_oracle(ctx.problem.with_(current=None, forecast=()))


def solve_joint_oracle(jp: JointProblem, limit: int = 300_000) -> Plan:
    """The joint optimum by enumeration (no accuracy floors): every per-GPU configuration whose
    slices each hold a column of one service or idle, every combination over the GPUs, each
    service routed optimally over its replicas. Independent of the joint MILP, for its tests."""
    types = defaultdict(list)
    for gid, t in jp.problems[0].gpus:
        types[t].append(gid)
    per_type = {t: _configs(t, [(k, c) for k, p in enumerate(jp.problems) for c in _undominated(columns(p, t))],
                            lambda kc: kc[1].slices) for t in types}
    size = math.prod(math.comb(len(per_type[t]) + len(ids) - 1, len(ids)) for t, ids in types.items())
    if size > limit:
        raise OracleTooLarge(f"oracle would enumerate {size} combinations (limit {limit})")
    objs = [objective_for(p) for p in jp.problems]
    best, best_val = None, -math.inf
    choices = [list(itertools.combinations_with_replacement(range(len(per_type[t])), len(ids))) for t, ids in types.items()]
    for combo in itertools.product(*choices):
        val = 0.0
        for k, (p, obj, w) in enumerate(zip(jp.problems, objs, jp.weights)):
            reps = sorted(((obj.power_coef * c.energy_j_per_req + obj.accuracy_coef * c.accuracy / p.rate_rps,
                            c.rmax_rps)
                           for t, picks in zip(types, combo) for i in picks
                           for kc in per_type[t][i][1] if kc is not None and kc[0] == k
                           for c in (kc[1],)), reverse=True)
            left = p.rate_rps
            for v, cap in reps:
                take = min(left, cap)
                val += w * v * take
                left -= take
            if left > 1e-9 * p.rate_rps:
                break
        else:
            if val > best_val:
                best, best_val = combo, val
    if best is None:
        raise ValueError("oracle: no configuration serves every service within its SLA")
    names = jp.names
    gpus = []
    for (t, ids), picks in zip(types.items(), best):
        for gid, i in zip(ids, picks):
            layout, slots = per_type[t][i]
            gpus.append(GpuPlan(gid, t, tuple(
                SliceAssignment(p, kc[1].variant, kc[1].batch, 0.0, names[kc[0]]) if kc else SliceAssignment(p, None)
                for p, kc in zip(layout, slots))))
    order = {gid: i for i, (gid, _) in enumerate(jp.problems[0].gpus)}
    plan = Plan("+".join(names), tuple(sorted(gpus, key=lambda g: order[g.gpu_id])))
    routed = reroute_joint(plan, jp)
    assert routed is not None
    return routed
