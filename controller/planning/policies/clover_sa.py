"""Clover's search as in the artifact (sc23-clover system/clover.py), re-run on our simulator.

- A configuration is a "MIG graph": the edge counts of the bipartite graph variant → slice
  size, one layout + one variant per slice, applied identically to ALL GPUs. Batch 1 (the
  artifact's servers answer one request at a time); traffic split across replicas in
  proportion to their batch-1 throughput.
- Re-plan only when |CI·PUE − CI·PUE at the last optimisation| / (mean CI·PUE of the trace)
  > 5 % (hour 0 always).
- Simulated annealing from the deployed configuration: T0 = 100, −5 per step, floor 10,
  K = 1e-4; a worse candidate becomes the centre with p = exp(−Δ/(K·T)); an SLA-violating
  score is scaled by SLA/latency. A candidate is drawn uniformly over the 19 layouts with a
  random variant per slice, not yet evaluated this hour, and must be within Manhattan
  distance 4 of the centre (400 draws, else "all neighbours evaluated").
- Every candidate not evaluated before (in any hour) is a LIVE trial: the simulator
  reconfigures to it (the node stops serving meanwhile) and serves 30 s of real requests on
  it, charged as exploration. Earlier results are reused with carbon rescaled by the CI·PUE
  ratio.
- Stop after 5 non-improving steps or 10 newly explored configurations (or exhausted
  neighbours) once an SLA-meeting one was found; switch to the best SLA-meeting one.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from configs.units import carbon_g
from controller.planning.model import PlanningProblem, objective_for, slice_profiles
from controller.planning.objective import REFERENCE_CI, REFERENCE_PUE, clover_score
from controller.planning.plan import GpuPlan, Plan, SliceAssignment
from controller.planning.policies.interface import HourContext, Policy
from mig.placement import enumerate_layouts

T0, DELTA_T, T_MIN, K = 100.0, 5.0, 10.0, 1e-4
NO_IMPROVE_LIMIT, EXPLORE_LIMIT, NEIGHBOUR_DIST, NEIGHBOUR_TRIES = 5, 10, 4, 400
REPLAN_THRESHOLD_PCT = 5.0
MAX_STEPS = 200  # safety stop: the artifact would loop forever if nothing meets the SLA


@dataclass(frozen=True)
class Config:
    layout_index: int  # into enumerate_layouts(first GPU type)
    variants: tuple[str, ...]  # one per slice, in layout order

    def graph(self, sizes: tuple[int, ...], names: tuple[str, ...]) -> tuple[int, ...]:
        """Edge counts variant → slice size, in a fixed order (the artifact's MIG graph)."""
        counts = {(v, s): 0 for v in names for s in (7, 4, 3, 2, 1)}
        for v, s in zip(self.variants, sizes):
            counts[v, s] += 1
        return tuple(counts[v, s] for v in names for s in (7, 4, 3, 2, 1))


def config_plan(problem: PlanningProblem, cfg: Config) -> Plan:
    """The same layout and variants on every GPU; shares ∝ batch-1 throughput."""
    gpus, caps = [], []
    for gid, t in problem.gpus:
        layout = enumerate_layouts(t)[cfg.layout_index]
        sizes = {name: k for k, (name, _) in slice_profiles(t).items()}
        slices = []
        for p, v in zip(layout, cfg.variants):
            cap = problem.perf.throughput_rps(problem.service.variant(v).profile_key, t, sizes[p.profile], 1)
            caps.append(cap)
            slices.append(SliceAssignment(p, v, 1, cap))
        gpus.append(GpuPlan(gid, t, tuple(slices)))
    total = sum(caps)
    gpus = [GpuPlan(g.gpu_id, g.gpu_type, tuple(SliceAssignment(s.placement, s.variant, 1, s.share / total)
                                                 for s in g.slices)) for g in gpus]
    return Plan(problem.service.name, tuple(gpus), problem.rate_rps, problem.carbon_intensity)


class LiveSearchPolicy(Policy):
    """Shared state of the live-trial baselines (Clover's SA and Rand)."""

    make_before_break = False  # the artifact stops all services of the node to reconfigure

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.history: dict[tuple, tuple[float, float, float, float]] = {}  # graph → acc, p95, g/req, CI·PUE
        self.optimized_cipue: float | None = None
        self.current: Config | None = None

    def _setup(self, problem: PlanningProblem) -> None:
        t0 = problem.gpus[0][1]
        self.layouts = enumerate_layouts(t0)
        sizes = {name: k for k, (name, _) in slice_profiles(t0).items()}
        self.sizes = [tuple(sizes[p.profile] for p in layout) for layout in self.layouts]
        self.names = tuple(v.name for v in problem.allowed_variants())
        if self.current is None:  # start from Base: the base variant on 7g
            full = next(i for i, s in enumerate(self.sizes) if s == (7,))
            self.current = Config(full, (problem.service.base_variant,))

    def graph(self, cfg: Config) -> tuple[int, ...]:
        return cfg.graph(self.sizes[cfg.layout_index], self.names)

    def random_config(self) -> Config:
        i = self.rng.randrange(len(self.layouts))
        return Config(i, tuple(self.rng.choice(self.names) for _ in self.sizes[i]))

    def should_replan(self, ctx: HourContext) -> bool:
        cipue = ctx.carbon_intensity * ctx.problem.pue
        if self.optimized_cipue is not None:
            diff = abs(cipue - self.optimized_cipue) / (ctx.mean_carbon_intensity * ctx.problem.pue) * 100.0
            if diff <= REPLAN_THRESHOLD_PCT:
                return False
        self.optimized_cipue = cipue
        return True

    def evaluate(self, ctx: HourContext, cfg: Config) -> tuple[float, float, bool]:
        """(score, p95, explored): a live trial unless measured before (then rescaled)."""
        problem = ctx.problem
        cipue = ctx.carbon_intensity * problem.pue
        g = self.graph(cfg)
        explored = g not in self.history
        if explored:
            res = ctx.trial(config_plan(problem, cfg))
            self.history[g] = (res.accuracy, res.p95_ms, res.carbon_per_request(ctx.carbon_intensity, problem.pue), cipue)
        acc, p95, c_req, then = self.history[g]
        c_req = c_req * cipue / then
        obj = objective_for(problem)
        base_c_req = carbon_g(obj.base_power_w / problem.rate_rps, REFERENCE_CI, REFERENCE_PUE)
        return clover_score(problem.lam, c_req, acc, base_c_req, obj.base_accuracy), p95, explored


class CloverSAPolicy(LiveSearchPolicy):
    name = "clover-sa"

    def decide(self, ctx: HourContext) -> Plan:
        self._setup(ctx.problem)
        if not self.should_replan(ctx):
            return config_plan(ctx.problem, self.current)
        sla = ctx.problem.sla_ms
        center = self.current
        center_score, temp = -1000.0, T0
        best, best_score = self.current, -1000.0
        seen: set = set()
        explored = no_improve = 0
        cfg = self.current
        for _ in range(MAX_STEPS):
            score, p95, new = self.evaluate(ctx, cfg)
            explored += new
            seen.add(self.graph(cfg))
            sa_score = score if p95 <= sla else score * sla / p95
            diff = center_score - sa_score
            if diff <= 0 or self.rng.uniform(0, 1) <= math.exp(-diff / (K * temp)):
                center, center_score = cfg, sa_score
            temp = max(temp - DELTA_T, T_MIN)
            if score > best_score and p95 <= sla:
                best, best_score, no_improve = cfg, score, 0
            else:
                no_improve += 1
            nxt, exhausted = None, True
            for _ in range(NEIGHBOUR_TRIES):
                cand = self.random_config()
                g = self.graph(cand)
                if g in seen:
                    continue
                if sum(abs(a - b) for a, b in zip(self.graph(center), g)) <= NEIGHBOUR_DIST:
                    nxt, exhausted = cand, False
                    break
            if (no_improve >= NO_IMPROVE_LIMIT or explored >= EXPLORE_LIMIT or exhausted) and best_score != -1000.0:
                break
            if nxt is None:
                break
            cfg = nxt
        self.current = best if best_score != -1000.0 else self.current
        return config_plan(ctx.problem, self.current)
