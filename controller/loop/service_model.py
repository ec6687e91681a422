"""The planner's view of the served service, as the loop needs it: planning problems, a replica's
SLA capacity, traffic shares over a fixed set of replicas, admission bounds. Pure (the
performance model only), rebuilt when the operator changes λ or the SLA.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from configs.schema import Service
from controller.loop.settings import LoopSettings
from controller.loop.view import assignment_of
from controller.planning.joint import idle_shares, joint_problem, solve_joint
from controller.planning.model import PlanningProblem, capacity_shares, column_of, columns, route
from controller.planning.plan import Plan, SliceAssignment
from controller.planning.planner import solve
from controller.serving.replica import ReplicaSpec
from controller.serving.router import queue_bound
from mig.placement import compute_slices_of
from mig.types import Layout, Placement
from models.performance import PerformanceModel


@dataclass(frozen=True)
class ServiceModel:
    service: Service
    perf: PerformanceModel
    settings: LoopSettings

    def problem(self, gpus: tuple[tuple[str, str], ...], rate_rps: float, carbon_intensity: float,
                current: Plan | None = None, forecast: tuple[float, ...] = (),
                sla_ms: float | None = None, held: tuple[tuple[str, Layout], ...] = ()) -> PlanningProblem:
        """`sla_ms`: plan for this p95 instead of the operator's SLA (the calibrated one); `held`:
        GPUs that keep their layout (PlanningProblem.held)."""
        s = self.settings
        return PlanningProblem(self.service, tuple(sorted(gpus)), self.perf, max(rate_rps, s.min_rate_rps),
                               s.sla if sla_ms is None else sla_ms,
                               lam=s.lam, carbon_intensity=carbon_intensity, pue=s.pue, current=current,
                               variants=s.variants, forecast=forecast, held=held)

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

    def offers(self, gpu_type: str, placement: Placement, sla_factor: float) -> list[tuple[SliceAssignment, float]]:
        """Every replica of this service that fits a slice at `placement` (each allowed variant and
        batch size), with the rate it carries within SLA × sla_factor: what a bridge may start there."""
        problem = self.problem(((f"any/{gpu_type}", gpu_type),), 1.0, 0.0)
        size = compute_slices_of(placement.profile)
        return [(SliceAssignment(placement, c.variant, c.batch, 0.0, self.service.name), c.rmax_rps)
                for c in columns(problem.with_(sla_ms=self.settings.sla * sla_factor), gpu_type) if c.slices == size]

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


@dataclass(frozen=True)
class Workload:
    """The services the loop serves together, each through its own ServiceModel (its λ, SLA,
    variants). With one service everything reduces to that service's model; with several, a
    replica's service is the one its spec (or its slice in the plan) names."""

    models: tuple[ServiceModel, ...]

    @classmethod
    def of(cls, settings: LoopSettings, services: Mapping[str, Service], perf: PerformanceModel) -> Workload:
        return cls(tuple(ServiceModel(services[s.name], perf, settings.for_service(s.name))
                         for s in settings.services))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.service.name for m in self.models)

    @property
    def settings(self) -> LoopSettings:
        """The cluster-wide settings (headroom, timeouts, …), the same in every service's model."""
        return self.models[0].settings

    def model(self, service: str) -> ServiceModel:
        """The model of `service` ("": the plan's one service)."""
        if not service:
            return self.models[0]
        for m in self.models:
            if m.service.name == service:
                return m
        raise KeyError(f"service {service!r} is not served; served: {', '.join(self.names)}")

    def warm(self, gpu_types: set[str]) -> None:
        for m in self.models:
            m.warm(gpu_types)

    def capacity(self, specs: Iterable[ReplicaSpec], service: str, sla_factor: float = 1.0) -> float:
        """What `service`'s replicas among `specs` carry within SLA × sla_factor."""
        m = self.model(service)
        return sum(m.rmax(s.gpu_type, assignment_of(s), sla_factor) for s in specs if s.service == m.service.name)

    def short_of(self, specs: Iterable[ReplicaSpec], rates: Mapping[str, float], services: Iterable[str]) -> list[str]:
        """The services among `services` whose replicas in `specs` cannot carry their rate × headroom
        within the transition SLA: taking other replicas of theirs offline must wait."""
        return list(self.missing(specs, rates, services))

    def missing(self, specs: Iterable[ReplicaSpec], rates: Mapping[str, float],
                services: Iterable[str]) -> dict[str, float]:
        """What each short service (see `short_of`) lacks, in req/s within the transition SLA."""
        specs = list(specs)
        s = self.settings
        gaps = {name: rates.get(name, 0.0) * s.headroom - self.capacity(specs, name, s.transition_sla_factor)
                for name in dict.fromkeys(services)}
        return {name: gap for name, gap in gaps.items() if gap > 0}

    def transition_capacity(self, gpu_type: str, a: SliceAssignment) -> float:
        """What a replica of `a.service` carries within the transition SLA (the capacity rule's measure)."""
        return self.model(a.service).rmax(gpu_type, a, self.settings.transition_sla_factor)

    def offers(self, gpu_type: str, placement: Placement, service: str) -> list[tuple[SliceAssignment, float]]:
        """The replicas of `service` a bridge may start at `placement`, by transition capacity."""
        return self.model(service).offers(gpu_type, placement, self.settings.transition_sla_factor)

    def shares(self, gpus: tuple[tuple[str, str], ...], rates: Mapping[str, float]) -> dict[str, float]:
        """Each service's part of the cluster: its Base's share of the Bases' needs at these rates."""
        problems = tuple(m.problem(gpus, rates[m.service.name], 0.0) for m in self.models)
        return dict(zip(self.names, idle_shares(problems) if len(problems) > 1 else (1.0,)))

    def plan(self, gpus: tuple[tuple[str, str], ...], rates: Mapping[str, float], carbon_intensity: float,
             current: Plan | None, forecast: tuple[float, ...], slas: Mapping[str, float],
             held: tuple[tuple[str, Layout], ...] = ()) -> Plan:
        """The plan for these rates (each × headroom) and planning SLAs: the single-service planner
        for one service without an accuracy floor, else the joint MILP over all services."""
        headroom = self.settings.headroom
        problems = tuple(m.problem(gpus, rates[m.service.name] * headroom, carbon_intensity, current, forecast,
                                   sla_ms=slas[m.service.name], held=held) for m in self.models)
        floors = tuple(m.settings.min_accuracy for m in self.models)
        if len(problems) == 1 and floors[0] is None:
            return solve(problems[0])
        return solve_joint(joint_problem(problems, floors, current))
