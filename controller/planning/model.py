"""The planning model shared by the exact planner, the baselines and the replay simulator.

One *column* is (GPU type, slice size, variant, max batch): a replica of that variant on a
slice of that size. Under the performance model a column has
- `rmax_rps`: the largest Poisson rate with predicted p95 ≤ SLA (controller/planning/queueing.py),
- `energy_j_per_req`: the dynamic energy per request of a replica loaded to `rmax_rps`, with
  the batches that form there (queueing.energy_per_request_j), so a replica at rate r adds
  r·energy_j_per_req watts above idle: linear in its traffic, the MILP's model. It is exact at
  rmax (where the MILP loads replicas) and optimistic below it (batches fill less);
  `predict(..., partial_batches=True)` charges the batches of each replica's actual rate,
- the variant's accuracy.
A GPU always draws its idle power (a GPU cannot be switched off from here; an empty GPU is
"powered down to idle"). Everything here is pure: no I/O.

One module although over 300 lines: the columns, Base and the evaluation of a plan define the
objective together (Base normalises it, evaluation and the MILP must agree bit for bit), and
splitting them would make each half import the other.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

from configs.loader import load_gpu_catalog
from configs.schema import Service
from controller.planning.objective import DEFAULT_LAMBDA, REFERENCE_PUE, Objective
from controller.planning.plan import GpuPlan, Plan, Prediction, SliceAssignment
from controller.planning.queueing import energy_per_request_j, max_rate_rps, p95_ms
from mig.placement import compute_slices_of, slice_multisets
from mig.types import Layout
from models.protocol import PerfModel

DEFAULT_BATCH_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True)
class ReconfigCost:
    """What changing a slice costs (assumed, not measured: no MIG-capable GPU here).

    MIG destroy/create are a few seconds each on an H100; starting a replica loads weights
    and warms up. A changed slice serves nothing for `mig_op_s × ops + model_load_s`.
    """

    mig_op_s: float = 2.0
    model_load_s: float = 10.0
    horizon_h: int = 6  # steps (hours in the replay) over which a switch must pay back; 0: always switch
    step_s: float = 3600.0  # length of one forecast step


@dataclass(frozen=True)
class PlanningProblem:
    """Everything one planning decision needs (DESIGN.md, Planner)."""

    service: Service
    gpus: tuple[tuple[str, str], ...]  # (gpu_id, gpu_type)
    perf: PerfModel  # models.performance.PerformanceModel, or a small model in tests
    rate_rps: float
    sla_ms: float
    lam: float = DEFAULT_LAMBDA
    carbon_intensity: float = 250.0
    pue: float = REFERENCE_PUE
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    variants: tuple[str, ...] | None = None  # variant names allowed (None: all of the service)
    current: Plan | None = None
    forecast: tuple[float, ...] = ()  # carbon intensity of the next steps (reconfig-aware mode)
    rate_forecast: tuple[float, ...] = ()  # rate to size for in the next steps (missing: the rate persists)
    # Expected mean rate when `rate_rps` is sized above it for bursts (None: the same). Capacity
    # and the SLA are planned for `rate_rps`; the objective counts the mean traffic.
    mean_rate_rps: float | None = None
    # Traffic the objective is normalised to (Base's power, the weight of accuracy) so that the
    # steps of a varying load add up to the run's objective; None: this step's own mean rate.
    reference_rate_rps: float | None = None
    # Traffic a switch made now meets while it is under way (the newest measured rate; None: the
    # mean). On bursty traffic the hour's mean says little about the next few seconds.
    switch_rate_rps: float | None = None
    reconfig: ReconfigCost = field(default_factory=ReconfigCost)
    # Share of the GPUs' idle power this service is charged (1: it has the GPUs to itself). When
    # several services share the cluster (controller/planning/joint.py) idle power is split so
    # that the services' shares add up to the cluster's, and each service's Base is charged the
    # same share, so its ΔC stays normalised against its own part of the cluster.
    idle_share: float = 1.0
    # GPUs whose MIG layout must stay as it is, (gpu_id, layout): the control loop holds a GPU whose
    # change cannot be made without dropping capacity (controller/loop/bridge.py). Variants may change.
    held: tuple[tuple[str, Layout], ...] = ()

    def __post_init__(self) -> None:
        if not self.gpus:
            raise ValueError("no GPUs to plan for")
        if self.rate_rps <= 0:
            raise ValueError(f"rate must be positive, got {self.rate_rps} req/s")
        if self.sla_ms <= 0:
            raise ValueError(f"SLA must be positive, got {self.sla_ms} ms")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if not 0.0 < self.idle_share <= 1.0:
            raise ValueError(f"idle share must be in (0, 1], got {self.idle_share}")

    @property
    def gpu_types(self) -> tuple[str, ...]:
        return tuple(sorted({t for _, t in self.gpus}))

    def allowed_variants(self):
        names = self.variants or tuple(v.name for v in self.service.variants)
        return tuple(self.service.variant(n) for n in names)

    @property
    def mean_rps(self) -> float:
        return self.rate_rps if self.mean_rate_rps is None else self.mean_rate_rps

    def with_(self, **changes) -> "PlanningProblem":
        return replace(self, **changes)


@dataclass(frozen=True)
class Column:
    gpu_type: str
    slices: int
    profile: str
    variant: str
    batch: int
    accuracy: float
    rmax_rps: float
    energy_j_per_req: float
    service_ms: tuple[float, ...]  # S(1..batch)
    busy_w: tuple[float, ...] = ()  # busy power while a batch of 1..batch runs


def slice_profiles(gpu_type: str) -> dict[int, tuple[str, float]]:
    """compute slices → (main profile name, memory GiB)."""
    return {p.compute_slices: (p.name, p.memory_gib) for p in load_gpu_catalog().main_profiles(gpu_type)}


def service_times(perf, key: str, gpu_type: str, slices: int, batch: int) -> tuple[float, ...]:
    return tuple(perf.batch_latency_ms(key, gpu_type, slices, b) for b in range(1, batch + 1))


@lru_cache(maxsize=65536)
def make_column(perf, gpu_type: str, slices: int, variant, batch: int, sla_ms: float) -> Column:
    profile, _ = slice_profiles(gpu_type)[slices]
    s = service_times(perf, variant.profile_key, gpu_type, slices, batch)
    busy = tuple(perf.busy_power_w(variant.profile_key, gpu_type, slices, b) for b in range(1, batch + 1))
    rmax = max_rate_rps(s, sla_ms)
    energy = energy_per_request_j(rmax, s, busy, exact=True)
    return Column(gpu_type, slices, profile, variant.name, batch, variant.accuracy, rmax, energy, s, busy)


def columns(problem: PlanningProblem, gpu_type: str) -> list[Column]:
    """Every feasible column of a GPU type: memory fits and some rate meets the SLA."""
    return list(_columns(problem.perf, problem.service, gpu_type, problem.allowed_variants(),
                         tuple(sorted(set(problem.batch_sizes))), float(problem.sla_ms)))


@lru_cache(maxsize=256)
def _columns(perf, service, gpu_type, variants, batches, sla_ms) -> tuple[Column, ...]:
    out = []
    for slices, (_, mem) in sorted(slice_profiles(gpu_type).items()):
        for v in variants:
            for b in batches:
                if perf.memory_gib(v.profile_key, b) > mem:
                    continue
                col = make_column(perf, gpu_type, slices, v, b, sla_ms)
                if col.rmax_rps > 0:
                    out.append(col)
    return tuple(out)


def multisets(gpu_type: str) -> dict[tuple[int, ...], Layout]:
    """Distinct slice-size multisets of the maximal layouts, with one layout realising each.

    Maximal layouts suffice: an unused slice costs nothing (idle power is per GPU), so any
    layout is dominated by a maximal one containing it."""
    return slice_multisets(gpu_type)


def max_capacity_rps(problem: PlanningProblem) -> float:
    """The most traffic any plan can serve within the SLA: on each GPU the layout whose slices'
    best SLA capacities add up highest (0 if no column meets the SLA)."""
    total = 0.0
    for _, t in problem.gpus:
        best: dict[int, float] = {}
        for c in columns(problem, t):
            best[c.slices] = max(best.get(c.slices, 0.0), c.rmax_rps)
        total += max(sum(best.get(s, 0.0) for s in m) for m in multisets(t))
    return total


# ---- base configuration and the objective ---------------------------------------------
def base_columns(problem: PlanningProblem) -> dict[str, Column]:
    """Per GPU type: the base variant on the whole GPU (7g), batch 1 (Clover's Base)."""
    v = problem.service.base
    out = {}
    for t in problem.gpu_types:
        full = max(slice_profiles(t))
        out[t] = make_column(problem.perf, t, full, v, 1, problem.sla_ms)
    return out


def base_split(problem: PlanningProblem) -> list[tuple[str, str, float]]:
    """(gpu_id, gpu_type, rate) of Base: traffic split in proportion to each GPU's capacity."""
    v = problem.service.base
    caps = []
    for gid, t in problem.gpus:
        full = max(slice_profiles(t))
        caps.append(problem.perf.throughput_rps(v.profile_key, t, full, 1))
    total = sum(caps)
    return [(gid, t, problem.rate_rps * c / total) for (gid, t), c in zip(problem.gpus, caps)]


def base_p95_ms(service, gpus, perf, rate_rps: float) -> float:
    """Base's predicted p95 at `rate_rps` (Clover's default SLA)."""
    v = service.base
    worst = 0.0
    probe = PlanningProblem(service, tuple(gpus), perf, rate_rps, 1.0)
    for _, t, r in base_split(probe):
        full = max(slice_profiles(t))
        worst = max(worst, p95_ms(r, service_times(perf, v.profile_key, t, full, 1)))
    return worst


def base_plan(problem: PlanningProblem) -> Plan:
    v = problem.service.base
    gpus = []
    for gid, t, r in base_split(problem):
        full = max(slice_profiles(t))
        layout = multisets(t)[(full,)]
        gpus.append(GpuPlan(gid, t, (SliceAssignment(layout[0], v.name, 1, r / problem.rate_rps),)))
    plan = Plan(problem.service.name, tuple(gpus), problem.rate_rps, problem.carbon_intensity)
    return replace(plan, predicted=predict(plan, problem))


def idle_power_w(problem: PlanningProblem) -> float:
    """The idle power of the problem's GPUs charged to its service (all of it unless shared)."""
    return problem.idle_share * sum(problem.perf.idle_power_w(t) for _, t in problem.gpus)


def base_power_w(problem: PlanningProblem) -> float:
    idle = idle_power_w(problem)
    v = problem.service.base
    busy = 0.0
    for _, t, r in base_split(problem):
        busy += r * make_column(problem.perf, t, max(slice_profiles(t)), v, 1, problem.sla_ms).energy_j_per_req
    return idle + busy


def served_objective(problem: PlanningProblem, carbon_intensity: float | None = None) -> Objective:
    """Clover's objective of an hour of the expected (mean) traffic, Base at the reference traffic."""
    ci = problem.carbon_intensity if carbon_intensity is None else carbon_intensity
    ref = problem.reference_rate_rps or problem.mean_rps
    at_ref = problem if ref == problem.rate_rps else problem.with_(rate_rps=ref)
    return Objective(problem.lam, base_power_w(at_ref), problem.service.base.accuracy, ci, problem.pue,
                     accuracy_weight=problem.mean_rps / ref)


def objective_for(problem: PlanningProblem, carbon_intensity: float | None = None) -> Objective:
    """The objective per unit of routed traffic, for the MILP and the routing LP: they route the
    planned `rate_rps`, of which only mean/rate is real traffic, so its energy counts that share
    (the same as the served objective when the two rates are equal)."""
    obj = served_objective(problem, carbon_intensity)
    return replace(obj, carbon_intensity=obj.carbon_intensity * problem.mean_rps / problem.rate_rps)


# ---- evaluating and routing a fixed set of replicas --------------------------------------
def column_of(problem: PlanningProblem, gpu_type: str, s: SliceAssignment) -> Column:
    slices = compute_slices_of(s.placement.profile)
    return make_column(problem.perf, gpu_type, slices, problem.service.variant(s.variant), s.batch, problem.sla_ms)


def replica_loads(plan: Plan, problem: PlanningProblem) -> Iterator[tuple[SliceAssignment, float, Column]]:
    """Each replica that receives traffic: its slice, its rate (req/s) and its column."""
    for g, s in plan.replicas():
        rate = s.share * problem.rate_rps
        if rate > 0:
            yield s, rate, column_of(problem, g.gpu_type, s)


def predict(plan: Plan, problem: PlanningProblem, carbon_intensity: float | None = None,
            partial_batches: bool = False) -> Prediction:
    """Power, carbon, accuracy, worst replica p95 and objective of a plan under the model.

    By default a request costs its column's full-batch energy (the MILP's linear model, so the
    planner and the exhaustive oracle agree exactly); `partial_batches=True` charges the batches
    that form at each replica's rate instead (what the replay simulator measures), for
    decisions between given plans: the pay-back and the hindsight schedule.
    Power and the objective are for the mean traffic, the p95 for the planned rate."""
    obj = served_objective(problem, carbon_intensity)
    power = idle_power_w(problem)
    acc = 0.0
    worst = 0.0
    served = problem.mean_rps / problem.rate_rps
    for s, rate, col in replica_loads(plan, problem):
        mean = rate * served
        power += mean * (energy_per_request_j(mean, col.service_ms, col.busy_w) if partial_batches
                         else col.energy_j_per_req)
        acc += s.share * col.accuracy
        worst = max(worst, p95_ms(rate, col.service_ms, problem.sla_ms))
    return Prediction(power, obj.carbon_g_per_h(power), acc, worst, obj.value(power, acc))


def route(problem: PlanningProblem, replicas: list[tuple[str, SliceAssignment]],
          carbon_intensity: float | None = None) -> list[float] | None:
    """Optimal shares over fixed replicas (the LP given the discrete choices), or None if
    their SLA capacity is short of the rate.

    The objective is linear in each replica's rate with a per-replica value and capacity
    rmax, so the LP is a fractional knapsack: fill replicas by decreasing value per request.
    """
    obj = objective_for(problem, carbon_intensity)
    cols = [column_of(problem, t, s) for t, s in replicas]
    value = [obj.power_coef * c.energy_j_per_req + obj.accuracy_coef * c.accuracy / problem.rate_rps for c in cols]
    left = problem.rate_rps
    rates = [0.0] * len(cols)
    for i in sorted(range(len(cols)), key=lambda i: -value[i]):
        take = min(left, cols[i].rmax_rps)
        rates[i] = take
        left -= take
        if left <= 1e-12 * problem.rate_rps:
            break
    if left > 1e-9 * problem.rate_rps:
        return None
    return [r / problem.rate_rps for r in rates]


def capacity_shares(problem: PlanningProblem, replicas: list[tuple[str, SliceAssignment]]) -> list[float]:
    """Shares in proportion to each replica's SLA capacity: how to spread traffic when the optimal
    routing cannot carry the rate (mid-rollout, overload); even when no replica meets the SLA."""
    caps = [column_of(problem, t, s).rmax_rps for t, s in replicas]
    total = sum(caps)
    if total <= 0:
        return [1.0 / len(replicas)] * len(replicas) if replicas else []
    return [c / total for c in caps]


def reroute(plan: Plan, problem: PlanningProblem, carbon_intensity: float | None = None) -> Plan | None:
    """The same replicas with optimal shares for the problem's rate (None if too little capacity)."""
    reps = [(g.gpu_type, s) for g, s in plan.replicas()]
    shares = route(problem, reps, carbon_intensity)
    if shares is None:
        return None
    it = iter(shares)
    gpus = tuple(
        replace(g, slices=tuple(replace(s, share=next(it)) if s.variant is not None else s for s in g.slices))
        for g in plan.gpus
    )
    out = replace(plan, gpus=gpus, rate_rps=problem.rate_rps, carbon_intensity=problem.carbon_intensity)
    return replace(out, predicted=predict(out, problem, carbon_intensity))
