"""Several services planned jointly on one cluster: which service gets which slice.

A joint problem is one `PlanningProblem` per service over the same GPUs, carbon intensity and
PUE; each keeps its own rate, SLA, λ, variants, batch sizes and Base. The MILP
(`planner.solve_milp`) shares every GPU's slices between the services and maximises the
traffic-weighted sum of the services' own Clover objectives:

    F = Σ_s w_s · f_s,   w_s = R_s / Σ R   (R: each service's reference traffic),
    f_s = λ_s·ΔC_s − (1−λ_s)·ΔA_s, ΔC_s and ΔA_s against service s's own Base.

Idle power belongs to no service, so it is split by a fixed rule: service s is charged the share
`idle_share_s` of the cluster's idle power that its Base would need of the cluster (its rate over
its Base's capacity, normalised over the services), and its Base is charged the same share. The
shares add up to one, so the services' powers add up to the cluster's, and with one service the
share is 1 and everything is the single-service planner bit for bit. The same rule divides the
GPUs of the `static-split` baseline (`static_split`).

A joint plan is one `Plan` whose slices carry their service (`SliceAssignment.service`), shares
being fractions of that service's rate; `service_view` is one service's part of it (the other
services' slices shown idle), which every single-service function (predict, reroute, switching
costs) takes as is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from controller.planning.model import PlanningProblem, predict, reroute, slice_profiles
from controller.planning.plan import GpuPlan, Plan, Prediction, SliceAssignment
from controller.planning.planner import decode, horizon, pay_back, solve_milp
from controller.planning.switching import switch_cost


@dataclass(frozen=True)
class JointProblem:
    """One planning decision for several services sharing the GPUs (build it with `joint_problem`)."""

    problems: tuple[PlanningProblem, ...]
    min_accuracy: tuple[float | None, ...] = ()  # per service; None: no floor
    current: Plan | None = None
    weights: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("no service to plan for")
        names = [p.service.name for p in self.problems]
        if len(set(names)) != len(names):
            raise ValueError(f"a service is named twice: {', '.join(names)}")
        first = self.problems[0]
        for p in self.problems[1:]:
            if (p.gpus, p.carbon_intensity, p.pue) != (first.gpus, first.carbon_intensity, first.pue):
                raise ValueError("the services of a joint problem share one cluster, carbon intensity and PUE")
        variants = [v for p in self.problems for v in p.allowed_variants()]
        shared = sorted({v.name for v in variants if sum(w.name == v.name for w in variants) > 1})
        if shared:
            raise ValueError(f"variant name(s) {', '.join(shared)} belong to several of the services "
                             f"{', '.join(names)}: give each service's variants distinct names in configs/services.yaml")
        if self.min_accuracy and len(self.min_accuracy) != len(self.problems):
            raise ValueError("give one accuracy floor (or None) per service")
        refs = [p.reference_rate_rps or p.mean_rps for p in self.problems]
        object.__setattr__(self, "weights", tuple(r / sum(refs) for r in refs))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.service.name for p in self.problems)

    @property
    def floors(self) -> tuple[float | None, ...]:
        return self.min_accuracy or (None,) * len(self.problems)

    def with_problems(self, problems: tuple[PlanningProblem, ...]) -> "JointProblem":
        return replace(self, problems=problems)


def base_need(problem: PlanningProblem) -> float:
    """How many of the problem's GPUs its Base needs to carry its rate (at Base's full throughput)."""
    v = problem.service.base
    caps = [problem.perf.throughput_rps(v.profile_key, t, max(slice_profiles(t)), 1) for _, t in problem.gpus]
    return problem.mean_rps / (sum(caps) / len(caps))


def idle_shares(problems: tuple[PlanningProblem, ...]) -> tuple[float, ...]:
    """Each service's share of the cluster: its Base's need over all services' (sums to one)."""
    needs = [base_need(p) for p in problems]
    return tuple(n / sum(needs) for n in needs)


def joint_problem(problems: tuple[PlanningProblem, ...], min_accuracy: tuple[float | None, ...] = (),
                  current: Plan | None = None) -> JointProblem:
    """A joint problem with each service's idle share set by its Base's need (module docstring)."""
    shares = idle_shares(problems) if len(problems) > 1 else (1.0,)
    return JointProblem(tuple(p.with_(idle_share=s, current=None) for p, s in zip(problems, shares)),
                        min_accuracy, current)


def service_view(plan: Plan, problem: PlanningProblem) -> Plan:
    """One service's part of a joint plan: its replicas, every other slice idle (the layout is kept)."""
    name = problem.service.name
    gpus = tuple(GpuPlan(g.gpu_id, g.gpu_type, tuple(
        s if s.variant is None or s.service in ("", name) else SliceAssignment(s.placement, None, 1, 0.0)
        for s in g.slices)) for g in plan.gpus)
    return Plan(name, gpus, problem.rate_rps, problem.carbon_intensity)


def service_predictions(plan: Plan, jp: JointProblem, partial_batches: bool = False) -> dict[str, Prediction]:
    """Each service's prediction for its part of a joint plan."""
    return {p.service.name: predict(service_view(plan, p), p, partial_batches=partial_batches) for p in jp.problems}


def predict_joint(plan: Plan, jp: JointProblem, partial_batches: bool = False) -> Prediction:
    """The cluster's power and carbon, the traffic-weighted accuracy and objective, the worst p95."""
    preds = list(service_predictions(plan, jp, partial_batches).values())
    return Prediction(
        power_w=sum(p.power_w for p in preds),
        carbon_g_per_h=sum(p.carbon_g_per_h for p in preds),
        accuracy=sum(w * p.accuracy for w, p in zip(jp.weights, preds)),
        p95_ms=max(p.p95_ms for p in preds),
        objective=sum(w * p.objective for w, p in zip(jp.weights, preds)),
    )


def solve_joint_exact(jp: JointProblem) -> Plan:
    """The joint MILP optimum at the problems' carbon intensity (no switching cost)."""
    y, sols = solve_milp(jp.problems, jp.weights, jp.floors)
    first = jp.problems[0]
    tags = jp.names if len(jp.problems) > 1 else ("",)
    plan = decode(first.gpus, jp.current, y, sols, tuple(p.rate_rps for p in jp.problems), "+".join(jp.names),
                  first.carbon_intensity, tags, dict(first.held))
    return replace(plan, predicted=predict_joint(plan, jp))


def solve_joint(jp: JointProblem) -> Plan:
    """The joint optimum, or (with a current plan and a horizon) the plan that pays back over it."""
    t0 = time.perf_counter()
    plan = best = solve_joint_exact(jp)
    if jp.current is not None and jp.problems[0].reconfig.horizon_h > 0:
        steps = [jp.with_problems(ps) for ps in zip(*(horizon(p) for p in jp.problems))]
        plan = pay_back(jp.current, best, steps, jp.problems[0].reconfig.step_s / 3600.0,
                        optimum=lambda step: solve_joint_exact(replace(step, current=jp.current)),
                        reroute_=reroute_joint,
                        value=lambda routed, step: predict_joint(routed, step, partial_batches=True).objective,
                        cost=lambda step, a, b: sum(w * switch_cost(p, service_view(a, p), service_view(b, p))
                                                    for w, p in zip(step.weights, step.problems)))
    return replace(plan, solve_ms=(time.perf_counter() - t0) * 1000.0)


def reroute_joint(plan: Plan, jp: JointProblem) -> Plan | None:
    """The same replicas with each service's optimal shares for its rate (None if one is short)."""
    shares: dict[tuple[str, object], float] = {}
    for p in jp.problems:
        routed = reroute(service_view(plan, p), p)
        if routed is None:
            return None
        shares.update({(g.gpu_id, s.placement): s.share for g, s in routed.replicas()})
    gpus = tuple(replace(g, slices=tuple(replace(s, share=shares[g.gpu_id, s.placement]) if s.variant else s
                                         for s in g.slices)) for g in plan.gpus)
    first = jp.problems[0]
    out = replace(plan, gpus=gpus, rate_rps=sum(p.rate_rps for p in jp.problems),
                  carbon_intensity=first.carbon_intensity)
    return replace(out, predicted=predict_joint(out, jp))
