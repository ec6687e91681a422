"""The planner's view of the served service, as the loop needs it: planning problems, a replica's
SLA capacity, traffic shares over a fixed set of replicas, admission bounds. Pure (the
performance model only), rebuilt when the operator changes λ or the SLA.
"""
from __future__ import annotations

from dataclasses import dataclass

from configs.schema import Service
from controller.loop.settings import LoopSettings
from controller.planning.model import PlanningProblem, capacity_shares, column_of, columns, route
from controller.planning.plan import Plan, SliceAssignment
from controller.serving.replica import ReplicaSpec
from controller.serving.router import queue_bound
from models.performance import PerformanceModel


@dataclass(frozen=True)
class ServiceModel:
    service: Service
    perf: PerformanceModel
    settings: LoopSettings

    def problem(self, gpus: tuple[tuple[str, str], ...], rate_rps: float, carbon_intensity: float,
                current: Plan | None = None, forecast: tuple[float, ...] = (),
                sla_ms: float | None = None) -> PlanningProblem:
        """`sla_ms`: plan for this p95 instead of the operator's SLA (the calibrated one)."""
        s = self.settings
        return PlanningProblem(self.service, tuple(sorted(gpus)), self.perf, max(rate_rps, s.min_rate_rps),
                               s.sla if sla_ms is None else sla_ms,
                               lam=s.lam, carbon_intensity=carbon_intensity, pue=s.pue, current=current,
                               variants=s.variants, forecast=forecast)

    def warm(self, gpu_types: set[str]) -> None:
        """Compute every column once (the queueing model's per-column bisection takes seconds in
        all), so that the first re-plan after a start — e.g. for a config change — takes
        milliseconds, not seconds."""
        for t in sorted(gpu_types):
            columns(self.problem(((f"any/{t}", t),), 1.0, 0.0), t)

    def rmax(self, gpu_type: str, a: SliceAssignment, sla_factor: float = 1.0) -> float:
        """Largest rate the replica carries with predicted p95 ≤ SLA × sla_factor."""
        problem = self.problem(((f"any/{gpu_type}", gpu_type),), 1.0, 0.0)
        return column_of(problem.with_(sla_ms=self.settings.sla * sla_factor), gpu_type, a).rmax_rps

    def shares(self, replicas: list[tuple[str, SliceAssignment]], rate_rps: float, carbon_intensity: float) -> list[float]:
        """Traffic shares over these replicas: the planner's optimal routing at this rate, or (too
        little capacity for that) in proportion to each one's SLA capacity."""
        if not replicas:
            return []
        problem = self.problem(tuple((f"g{i}", t) for i, (t, _) in enumerate(replicas)), rate_rps, carbon_intensity)
        shares = route(problem, replicas, carbon_intensity)
        if shares is None or sum(shares) <= 0:
            shares = capacity_shares(problem, replicas)
        total = sum(shares)
        return [x / total for x in shares]

    def queue_bound(self, spec: ReplicaSpec) -> int:
        """Requests a replica may hold before a new one would miss the SLA (router admission)."""
        tput = self.perf.throughput_rps(spec.variant_key, spec.gpu_type, spec.compute_slices, spec.batch)
        return queue_bound(tput, self.settings.sla, spec.batch)
