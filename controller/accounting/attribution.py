"""Energy and carbon accounting per interval: per GPU, per MIG slice, per variant, per request,
and the `base` counterfactual. Pure: no I/O; the serving layer feeds it measurements.

Per-slice attribution (NVML cannot read a MIG slice; see docs/accounting.md):
1. The GPU's measured energy E over an interval of T seconds splits into an idle part
   I = min(E, P_idle·T) and a dynamic part D = E − I.
2. I is shared by slice size: a slice with c compute slices gets I·c/7; the compute slices no
   instance occupies give their share to the GPU's "unallocated" bucket (an idle GPU's whole
   energy lands there), so the cost of leaving capacity unused stays visible.
3. D is shared in proportion to busy_s × the variant's profiled dynamic power on that slice
   size (PerformanceModel.busy_power_w). With no busy time at all, D (measurement noise above
   the idle figure) is shared like I.
The shares add up to E (up to floating-point rounding).

Carbon of an interval = kWh × carbon intensity × PUE (+ optional embodied carbon per GPU-hour,
default 0, charged equally to the actual run and to the baseline: same hardware). The host's
CPU package and DRAM energy (RAPL, `HostEnergy`), when the caller measures it, is charged the
same way: it is in the run's carbon and in the baseline's, since `base` would run on the same
hosts; only the GPUs' energy is attributed to slices.

Baseline ("saved" is like for like): `base` = the service's base variant on 7g on every GPU,
serving the same number of requests over the same interval at the same carbon intensity and
PUE, priced by the same performance model: every GPU idles at P_idle, and busy time
N / (GPUs × base throughput) (capped at T: base would saturate) at base's busy power.
A GPU whose measurement is missing is estimated from the same model and the interval is
marked estimated. (One module although over 300 lines: the attribution, the baseline and the
carbon of an interval are one computation whose parts must add up to the metered total.)
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from configs.schema import Service, Variant
from configs.units import carbon_g

UNALLOCATED = "unallocated"  # slice id of the capacity no MIG instance occupies
IDLE_VARIANT = "(idle)"  # variant key for slices that exist but serve nothing
UNALLOCATED_VARIANT = "(unallocated)"


class PowerModel(Protocol):
    """The part of models/performance.PerformanceModel accounting needs."""

    def busy_power_w(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float: ...
    def idle_power_w(self, gpu_type: str) -> float: ...
    def max_power_w(self, gpu_type: str) -> float: ...
    def throughput_rps(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float: ...


@dataclass(frozen=True)
class SliceActivity:
    """What one MIG slice did during the interval."""

    gpu_id: str
    slice_id: str  # unique within the GPU, e.g. "3g@4" (profile@start)
    compute_slices: int
    variant: str | None  # the service's variant name; None: the slice idled
    busy_s: float = 0.0  # seconds the slice spent running batches
    batch: int = 1


def attribute_energy(total_j: float, duration_s: float, slices: Sequence[tuple[str, int, float]],
                     idle_power_w: float, compute_slices: int = 7) -> dict[str, float]:
    """Split one GPU's measured energy over its slices: {slice_id: J, UNALLOCATED: J}.

    `slices`: (slice_id, compute slices, dynamic weight = busy_s × busy power in J).
    """
    if total_j < 0 or duration_s < 0:
        raise ValueError(f"energy and duration must be >= 0, got {total_j} J over {duration_s} s")
    used = sum(c for _, c, _ in slices)
    if used > compute_slices:
        raise ValueError(f"slices use {used} compute slices, the GPU has {compute_slices}")
    size = {sid: c / compute_slices for sid, c, _ in slices}
    size[UNALLOCATED] = size.get(UNALLOCATED, 0.0) + (compute_slices - used) / compute_slices
    idle_j = min(total_j, idle_power_w * duration_s)
    dynamic_j = total_j - idle_j
    weights = {sid: w for sid, _, w in slices if w > 0}
    total_w = math.fsum(weights.values())
    shares: dict[str, float] = {}
    for sid, frac in size.items():
        dyn = dynamic_j * (weights.get(sid, 0.0) / total_w) if total_w > 0 else dynamic_j * frac
        shares[sid] = idle_j * frac + dyn
    largest = max(shares, key=shares.__getitem__)
    shares[largest] += total_j - math.fsum(shares.values())  # rounding residue, so shares add up to E
    return shares


@dataclass(frozen=True)
class HostEnergy:
    """CPU package and DRAM energy of the serving hosts over one interval (joules)."""

    cpu_j: float = 0.0
    ram_j: float = 0.0
    estimated: bool = False  # True: (part of) it could not be read, so the figures are short
    notes: tuple[str, ...] = ()

    @classmethod
    def from_rapl(cls, energy_j: Mapping[str, float], *, estimated: bool = False,
                  notes: Sequence[str] = ()) -> HostEnergy:
        """From a RAPL reading ({"cpu0": J, "cpu0-dram": J, ...}, gpu_node/meters/rapl.py device ids;
        a node prefix such as "node1/cpu0" is fine). An empty reading means RAPL was not readable."""
        if not energy_j:
            return cls(estimated=True, notes=(*notes, "host CPU/DRAM energy not readable (RAPL); counted as 0"))
        ram = math.fsum(j for dev, j in energy_j.items() if dev.endswith("-dram"))
        return cls(math.fsum(energy_j.values()) - ram, ram, estimated, tuple(notes))


@dataclass(frozen=True)
class IntervalAccount:
    timestamp: datetime  # end of the interval (UTC)
    duration_s: float
    carbon_intensity: float
    pue: float
    energy_j: float  # the GPUs' (host CPU/DRAM energy is apart, below)
    energy_by_gpu: dict[str, float]
    energy_by_slice: dict[str, float]  # "gpu_id/slice_id"
    slice_variants: dict[str, str]  # "gpu_id/slice_id" -> variant, IDLE_VARIANT or UNALLOCATED_VARIANT
    energy_by_variant: dict[str, float]
    carbon_g: float  # operational (GPUs + host) + embodied
    carbon_by_gpu: dict[str, float]
    carbon_by_slice: dict[str, float]
    carbon_by_variant: dict[str, float]
    carbon_per_request_g: dict[str, float]  # per variant, operational only
    embodied_g: float
    baseline_energy_j: float
    baseline_carbon_g: float
    requests: int
    requests_by_variant: dict[str, int]
    failed: int
    accuracy: float | None  # request-weighted; None without requests
    baseline_accuracy: float
    p95_ms: float | None
    estimated: bool
    notes: tuple[str, ...] = ()
    cpu_energy_j: float = 0.0
    ram_energy_j: float = 0.0
    host_carbon_g: float = 0.0  # of cpu + ram energy; in carbon_g and in baseline_carbon_g alike

    @property
    def saved_g(self) -> float:
        return self.baseline_carbon_g - self.carbon_g

    def event_fields(self) -> dict:
        """The fields of the run.log `interval` event (docs/DESIGN.md)."""
        return {"duration_s": self.duration_s, "energy_j": self.energy_j, "carbon_g": self.carbon_g,
                "baseline_carbon_g": self.baseline_carbon_g, "accuracy": self.accuracy, "p95_ms": self.p95_ms,
                "requests": self.requests, "failed": self.failed, "carbon_intensity": self.carbon_intensity,
                "cpu_energy_j": self.cpu_energy_j, "ram_energy_j": self.ram_energy_j, "estimated": self.estimated}


@dataclass
class Totals:
    intervals: int = 0
    duration_s: float = 0.0
    energy_j: float = 0.0
    carbon_g: float = 0.0
    embodied_g: float = 0.0
    baseline_energy_j: float = 0.0
    baseline_carbon_g: float = 0.0
    requests: int = 0
    failed: int = 0
    accuracy: float | None = None
    baseline_accuracy: float = 0.0
    estimated: bool = False
    energy_by_variant: dict[str, float] = field(default_factory=dict)
    carbon_by_variant: dict[str, float] = field(default_factory=dict)

    @property
    def saved_g(self) -> float:
        return self.baseline_carbon_g - self.carbon_g

    @property
    def saved_pct(self) -> float | None:
        return 100.0 * self.saved_g / self.baseline_carbon_g if self.baseline_carbon_g > 0 else None


class Accountant:
    """Accumulates interval accounts for one service on a fixed set of GPUs."""

    def __init__(self, service: Service, gpus: Mapping[str, str], perf: PowerModel, *,
                 embodied_g_per_gpu_hour: float = 0.0, base_batch: int = 1, compute_slices: int = 7,
                 others: Sequence[Service] = ()) -> None:
        """`gpus`: gpu_id -> GPU type (catalog name) of every GPU the deployment holds; `others`:
        the services served beside `service` on them (controller/accounting/by_service.py)."""
        if not gpus:
            raise ValueError("Accountant needs at least one GPU")
        if embodied_g_per_gpu_hour < 0:
            raise ValueError(f"embodied_g_per_gpu_hour must be >= 0, got {embodied_g_per_gpu_hour}")
        self.service = service
        self.services = (service, *others)
        self.owner = {v.name: svc for svc in self.services for v in svc.variants}  # variant -> its service
        self.gpus = dict(gpus)
        self.perf = perf
        self.embodied_g_per_gpu_hour = embodied_g_per_gpu_hour
        self.base_batch = base_batch
        self.compute_slices = compute_slices
        self.accounts: list[IntervalAccount] = []

    def _variant(self, variant: str) -> Variant:
        """The variant of whichever served service has it; KeyError naming the known ones."""
        svc = self.owner.get(variant, self.service)  # an unknown name: the service's own KeyError says which exist
        return svc.variant(variant)

    def _key(self, variant: str) -> str:
        return self._variant(variant).profile_key

    def accuracy_of(self, variant: str) -> float:
        return self._variant(variant).accuracy

    def _dynamic_j(self, gpu_type: str, s: SliceActivity) -> float:
        if s.variant is None or s.busy_s <= 0:
            return 0.0
        return s.busy_s * self.perf.busy_power_w(self._key(s.variant), gpu_type, s.compute_slices, s.batch)

    def baseline_energy_j(self, service: Service, duration_s: float, requests: int, share: float = 1.0) -> float:
        """`base` for `service`: its base variant on 7g on `share` of every GPU (its part of the
        cluster, controller/planning/joint.py), serving `requests` over the interval."""
        key = service.base.profile_key
        full = self.compute_slices
        capacity = share * sum(self.perf.throughput_rps(key, t, full, self.base_batch) for t in self.gpus.values())
        busy_s = min(duration_s, requests / capacity) if capacity > 0 else duration_s
        return share * sum(self.perf.idle_power_w(t) * duration_s
                           + busy_s * self.perf.busy_power_w(key, t, full, self.base_batch) for t in self.gpus.values())

    def _baseline_energy_j(self, duration_s: float, requests_by_variant: Mapping[str, int],
                           shares: Mapping[str, float] | None) -> float:
        if len(self.services) == 1:
            return self.baseline_energy_j(self.service, duration_s, sum(requests_by_variant.values()))
        by_service: dict[str, int] = defaultdict(int)
        for v, n in requests_by_variant.items():
            by_service[self.owner[v].name] += n
        shares = shares or {svc.name: 1.0 / len(self.services) for svc in self.services}
        return math.fsum(self.baseline_energy_j(svc, duration_s, by_service[svc.name], shares[svc.name])
                         for svc in self.services)

    def record_interval(self, duration_s: float, gpu_energy_j: Mapping[str, float | None],
                        slice_busy: Sequence[SliceActivity], requests_by_variant: Mapping[str, int],
                        carbon_intensity: float, pue: float, *, p95_ms: float | None = None, failed: int = 0,
                        estimated: bool = False, timestamp: datetime | None = None,
                        host: HostEnergy | None = None, service_shares: Mapping[str, float] | None = None) -> IntervalAccount:
        """Account one interval. A GPU absent from `gpu_energy_j` (or None) is estimated from the model.

        `estimated` carries the meter's own flag (Measurement.estimated) into the account;
        `host` the hosts' CPU/DRAM energy when measured (its `estimated` flag and notes too);
        `service_shares`: with several services, each one's part of the cluster (its Base's part).
        """
        if duration_s <= 0:
            raise ValueError(f"interval duration must be > 0 s, got {duration_s}")
        unknown = (set(gpu_energy_j) | {s.gpu_id for s in slice_busy}) - set(self.gpus)
        if unknown:
            raise ValueError(f"unknown GPU id(s) {sorted(unknown)}; the accountant holds {sorted(self.gpus)}")
        host = host or HostEnergy()
        notes: list[str] = []  # GPUs whose energy had to be estimated
        by_gpu_slices: dict[str, list[SliceActivity]] = defaultdict(list)
        for s in slice_busy:
            by_gpu_slices[s.gpu_id].append(s)

        energy_by_gpu: dict[str, float] = {}
        energy_by_slice: dict[str, float] = {}
        slice_variants: dict[str, str] = {}
        energy_by_variant: dict[str, float] = defaultdict(float)
        for gpu_id, gpu_type in self.gpus.items():
            slices = by_gpu_slices.get(gpu_id, [])
            weights = [(s.slice_id, s.compute_slices, self._dynamic_j(gpu_type, s)) for s in slices]
            idle_w = self.perf.idle_power_w(gpu_type)
            measured = gpu_energy_j.get(gpu_id)
            if measured is None:
                dynamic = math.fsum(w for _, _, w in weights)
                measured = min(idle_w * duration_s + dynamic, self.perf.max_power_w(gpu_type) * duration_s)
                notes.append(f"{gpu_id}: no measurement; estimated from the performance model")
            energy_by_gpu[gpu_id] = measured
            shares = attribute_energy(measured, duration_s, weights, idle_w, self.compute_slices)
            variant_of = {s.slice_id: s.variant or IDLE_VARIANT for s in slices}
            for sid, joules in shares.items():
                variant = variant_of.get(sid, UNALLOCATED_VARIANT)
                energy_by_slice[f"{gpu_id}/{sid}"] = joules
                slice_variants[f"{gpu_id}/{sid}"] = variant
                energy_by_variant[variant] += joules

        requests = sum(requests_by_variant.values())
        total_j = math.fsum(energy_by_gpu.values())
        embodied = self.embodied_g_per_gpu_hour * len(self.gpus) * duration_s / 3600.0

        def co2(joules: float) -> float:
            return carbon_g(joules, carbon_intensity, pue)

        carbon_by_variant = {v: co2(j) for v, j in energy_by_variant.items()}
        accuracy = (math.fsum(n * self.accuracy_of(v) for v, n in requests_by_variant.items()) / requests
                    if requests else None)
        baseline_j = self._baseline_energy_j(duration_s, requests_by_variant, service_shares)
        host_g = co2(host.cpu_j + host.ram_j)
        account = IntervalAccount(
            timestamp=timestamp or datetime.now(timezone.utc),
            duration_s=duration_s,
            carbon_intensity=carbon_intensity,
            pue=pue,
            energy_j=total_j,
            energy_by_gpu=energy_by_gpu,
            energy_by_slice=energy_by_slice,
            slice_variants=slice_variants,
            energy_by_variant=dict(energy_by_variant),
            carbon_g=co2(total_j) + embodied + host_g,
            carbon_by_gpu={g: co2(j) for g, j in energy_by_gpu.items()},
            carbon_by_slice={s: co2(j) for s, j in energy_by_slice.items()},
            carbon_by_variant=carbon_by_variant,
            carbon_per_request_g={v: carbon_by_variant.get(v, 0.0) / n for v, n in requests_by_variant.items() if n},
            embodied_g=embodied,
            baseline_energy_j=baseline_j,
            baseline_carbon_g=co2(baseline_j) + embodied + host_g,
            requests=requests,
            requests_by_variant=dict(requests_by_variant),
            failed=failed,
            accuracy=accuracy,
            baseline_accuracy=self.service.base.accuracy,
            p95_ms=p95_ms,
            estimated=estimated or host.estimated or bool(notes),
            notes=(*notes, *host.notes),
            cpu_energy_j=host.cpu_j,
            ram_energy_j=host.ram_j,
            host_carbon_g=host_g,
        )
        self.accounts.append(account)
        return account

    def totals(self) -> Totals:
        return sum_accounts(self.accounts, self.service.base.accuracy)


def sum_accounts(accounts: Iterable[IntervalAccount], baseline_accuracy: float) -> Totals:
    """A run's totals from its intervals: the whole cluster's, or one service's part."""
    t = Totals(baseline_accuracy=baseline_accuracy)
    weighted_acc = 0.0
    for a in accounts:
        t.intervals += 1
        t.duration_s += a.duration_s
        t.energy_j += a.energy_j
        t.carbon_g += a.carbon_g
        t.embodied_g += a.embodied_g
        t.baseline_energy_j += a.baseline_energy_j
        t.baseline_carbon_g += a.baseline_carbon_g
        t.requests += a.requests
        t.failed += a.failed
        t.estimated |= a.estimated
        weighted_acc += (a.accuracy or 0.0) * a.requests
        for v, j in a.energy_by_variant.items():
            t.energy_by_variant[v] = t.energy_by_variant.get(v, 0.0) + j
        for v, g in a.carbon_by_variant.items():
            t.carbon_by_variant[v] = t.carbon_by_variant.get(v, 0.0) + g
    t.accuracy = weighted_acc / t.requests if t.requests else None
    return t
