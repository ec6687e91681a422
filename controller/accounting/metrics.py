"""The Prometheus text exposition of Clover: `render_metrics(serving, accounting)` is the body of GET /metrics.

Rendered from data, not from instruments: (a) the merged, cumulative `ServingCounters` of every
ingress replica (controller/serving/counters.py) and (b) an `AccountingSnapshot` of the control
loop's cumulative accounting. A custom collector on a registry made per call (never the
process-global one), so several controllers or tests in one process never collide and a
restarted ingress replica needs no state of its own to serve correct totals.

Names follow Prometheus conventions (base units: seconds, joules, grams; counters end in
`_total`, exactly once). Latency is a histogram per service/variant from HTTP arrival at the
ingress (`clover_request_duration_seconds`) and per service/replica on the slice
(`clover_slice_duration_seconds`, what the SLA bounds), with fixed `le` bounds LATENCY_BUCKETS_S.
docs/metrics.md lists every metric; docs/grafana/clover.json charts them.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from controller.accounting.attribution import IntervalAccount
from controller.carbon.base import CarbonReading
from controller.serving.counters import (
    STEPS_PER_DOUBLING,
    LatencyHistogram,
    ServingCounters,
    bucket_upper_s,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _round_up(x: float, digits: int = 3) -> float:
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale - 1e-6) / scale


# Every half doubling (x1.41) from 0.4 ms to 13 s. Each bound is the upper edge of one of the
# counters' log buckets, rounded up to 3 digits, so `count_le` is exact at every bound.
LATENCY_BUCKETS_S: tuple[float, ...] = tuple(
    _round_up(bucket_upper_s(k * STEPS_PER_DOUBLING // 2)) for k in range(4, 35))

SliceKey = tuple[str, str, str, str]  # (service, gpu, slice, variant)


@dataclass(frozen=True)
class CarbonGauge:
    value_gco2_per_kwh: float
    source: str
    stale: bool = False


@dataclass(frozen=True)
class ReplicaPlacement:
    """Where a slice replica runs: joins `clover_slice_duration_seconds{replica}` to GPU, slice, variant."""

    service: str
    gpu: str
    slice: str
    variant: str


@dataclass(frozen=True)
class AccountingSnapshot:
    """The control loop's cumulative accounting at one moment (what /metrics shows besides serving)."""

    energy_j: Mapping[SliceKey, float] = field(default_factory=dict)  # GPU energy attributed per slice
    carbon_g: Mapping[SliceKey, float] = field(default_factory=dict)  # its operational carbon
    overhead_carbon_g: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (service, embodied|host)
    host_energy_j: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (service, cpu|dram)
    baseline_energy_j: Mapping[str, float] = field(default_factory=dict)  # service -> J of `base`
    baseline_carbon_g: Mapping[str, float] = field(default_factory=dict)  # service -> g of `base`, overheads incl.
    carbon_intensity: CarbonGauge | None = None
    sla_s: Mapping[str, float] = field(default_factory=dict)  # service -> p95 SLA on the slice
    accuracy: Mapping[str, float] = field(default_factory=dict)  # service -> last interval, request-weighted
    estimated: Mapping[str, bool] = field(default_factory=dict)  # service -> last interval's energy (partly) modelled
    plan_changes: Mapping[str, int] = field(default_factory=dict)  # service -> plans applied that changed something
    layout_changes: Mapping[str, int] = field(default_factory=dict)  # gpu -> MIG layouts applied (instances changed)
    variant_swaps: Mapping[str, int] = field(default_factory=dict)  # service -> variant/batch swaps on kept slices
    replicas: Mapping[str, ReplicaPlacement] = field(default_factory=dict)  # replica (Serve app) name -> placement


class AccountingTotals:
    """Accumulates the loop's accounting into AccountingSnapshots (mutable; the loop owns one)."""

    def __init__(self) -> None:
        self._energy: dict[SliceKey, float] = defaultdict(float)
        self._carbon: dict[SliceKey, float] = defaultdict(float)
        self._overhead: dict[tuple[str, str], float] = defaultdict(float)
        self._host: dict[tuple[str, str], float] = defaultdict(float)
        self._base_j: dict[str, float] = defaultdict(float)
        self._base_g: dict[str, float] = defaultdict(float)
        self._plans: dict[str, int] = defaultdict(int)
        self._layouts: dict[str, int] = defaultdict(int)
        self._swaps: dict[str, int] = defaultdict(int)
        self._accuracy: dict[str, float] = {}
        self._estimated: dict[str, bool] = {}
        self._sla: dict[str, float] = {}
        self._carbon_now: CarbonGauge | None = None
        self._replicas: dict[str, ReplicaPlacement] = {}

    def observe_interval(self, service: str, a: IntervalAccount) -> None:
        for key, joules in a.energy_by_slice.items():
            gpu, _, slice_id = key.rpartition("/")
            k = (service, gpu, slice_id, a.slice_variants[key])
            self._energy[k] += joules
            self._carbon[k] += a.carbon_by_slice[key]
        self._overhead[service, "embodied"] += a.embodied_g
        self._overhead[service, "host"] += a.host_carbon_g
        self._host[service, "cpu"] += a.cpu_energy_j
        self._host[service, "dram"] += a.ram_energy_j
        self._base_j[service] += a.baseline_energy_j
        self._base_g[service] += a.baseline_carbon_g
        if a.accuracy is not None:
            self._accuracy[service] = a.accuracy
        self._estimated[service] = a.estimated

    def observe_carbon(self, reading: CarbonReading) -> None:
        self._carbon_now = CarbonGauge(reading.value_gco2_per_kwh, reading.source, reading.stale)

    def plan_applied(self, service: str, *, layout_changes: Mapping[str, int] | None = None,
                     variant_swaps: int = 0) -> None:
        """A plan that changed something: MIG layouts applied per GPU, and swaps on slices that stayed."""
        self._plans[service] += 1
        for gpu, n in (layout_changes or {}).items():
            self._layouts[gpu] += n
        self._swaps[service] += variant_swaps

    def set_sla(self, service: str, sla_s: float) -> None:
        self._sla[service] = sla_s

    def set_replicas(self, replicas: Mapping[str, ReplicaPlacement]) -> None:
        self._replicas = dict(replicas)

    def snapshot(self) -> AccountingSnapshot:
        return AccountingSnapshot(
            dict(self._energy), dict(self._carbon), dict(self._overhead), dict(self._host), dict(self._base_j),
            dict(self._base_g), self._carbon_now, dict(self._sla), dict(self._accuracy), dict(self._estimated),
            dict(self._plans), dict(self._layouts), dict(self._swaps), dict(self._replicas))


def _counter(name: str, doc: str, labels: list[str], values: Mapping) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc, labels=labels)
    for key, v in sorted(values.items()):
        m.add_metric(list(key) if isinstance(key, tuple) else [key], float(v))
    return m


def _gauge(name: str, doc: str, labels: list[str], values: Mapping) -> GaugeMetricFamily:
    m = GaugeMetricFamily(name, doc, labels=labels)
    for key, v in sorted(values.items()):
        m.add_metric(list(key) if isinstance(key, tuple) else [key], float(v))
    return m


def _histogram(name: str, doc: str, labels: list[str],
               hists: Mapping[tuple[str, str], LatencyHistogram]) -> HistogramMetricFamily:
    m = HistogramMetricFamily(name, doc, labels=labels, unit="seconds")
    for key, h in sorted(hists.items()):
        buckets = [(repr(b), float(h.count_le(b))) for b in LATENCY_BUCKETS_S] + [("+Inf", float(h.total))]
        m.add_metric(list(key), buckets, h.sum_s)
    return m


class CloverCollector:
    """prometheus-client collector over one ServingCounters and one AccountingSnapshot."""

    def __init__(self, serving: ServingCounters, accounting: AccountingSnapshot) -> None:
        self.serving = serving
        self.accounting = accounting

    def collect(self) -> Iterator[Metric]:
        s, a = self.serving, self.accounting
        yield _histogram("clover_request_duration_seconds",
                         "Request latency from HTTP arrival at the ingress to the response", ["service", "variant"],
                         s.latency)
        yield _histogram("clover_slice_duration_seconds",
                         "Time a request spent on its slice replica (batching wait, queue, service): what the SLA bounds",
                         ["service", "replica"], s.slice_latency)
        yield _counter("clover_requests_total", "Requests answered successfully",
                       ["service", "variant", "replica"], s.ok)
        yield _counter("clover_request_errors_total", "Requests that failed, by kind", ["service", "kind"], s.failed)
        yield _gauge("clover_requests_in_flight", "Requests received and not yet answered", ["service"], s.inflight)
        slice_labels = ["service", "gpu", "slice", "variant"]
        yield _counter("clover_energy_joules_total", "GPU energy attributed to a MIG slice and the variant on it",
                       slice_labels, a.energy_j)
        yield _counter("clover_carbon_grams_total", "Operational carbon (gCO2eq) of the GPU energy of a slice",
                       slice_labels, a.carbon_g)
        yield _counter("clover_overhead_carbon_grams_total",
                       "Carbon charged to the run and to base alike: embodied, and the hosts' CPU/DRAM energy",
                       ["service", "kind"], a.overhead_carbon_g)
        yield _counter("clover_host_energy_joules_total", "Hosts' CPU package and DRAM energy (RAPL) when measured",
                       ["service", "device"], a.host_energy_j)
        yield _counter("clover_baseline_energy_joules_total",
                       "GPU energy `base` (largest variant on whole GPUs) would have used for the same requests",
                       ["service"], a.baseline_energy_j)
        yield _counter("clover_baseline_carbon_grams_total",
                       "Carbon (gCO2eq) `base` would have emitted, overheads included", ["service"], a.baseline_carbon_g)
        ci = {} if a.carbon_intensity is None else {a.carbon_intensity.source: a.carbon_intensity.value_gco2_per_kwh}
        yield _gauge("clover_carbon_intensity_gco2_per_kwh", "Grid carbon intensity the loop plans with",
                     ["source"], ci)
        stale = {} if a.carbon_intensity is None else {a.carbon_intensity.source: a.carbon_intensity.stale}
        yield _gauge("clover_carbon_intensity_stale",
                     "1 when the carbon intensity is the last good value after a failed refresh", ["source"], stale)
        yield _gauge("clover_sla_seconds", "p95 latency SLA on the slice", ["service"], a.sla_s)
        yield _gauge("clover_accuracy_percent", "Request-weighted accuracy of the last interval", ["service"],
                     a.accuracy)
        yield _gauge("clover_energy_estimated", "1 when the last interval's energy is (partly) modelled, not measured",
                     ["service"], a.estimated)
        yield _counter("clover_plan_changes_total", "Plans applied that changed the deployment", ["service"],
                       a.plan_changes)
        yield _counter("clover_mig_layout_changes_total", "MIG layouts applied to a GPU (instances destroyed/created)",
                       ["gpu"], a.layout_changes)
        yield _counter("clover_variant_swaps_total", "Variant or batch swaps on a slice whose MIG instance stayed",
                       ["service"], a.variant_swaps)
        info = GaugeMetricFamily("clover_replica_info", "Placement of each slice replica (value 1)",
                                 labels=["replica", "service", "gpu", "slice", "variant"])
        for name, p in sorted(a.replicas.items()):
            info.add_metric([name, p.service, p.gpu, p.slice, p.variant], 1.0)
        yield info


def render_metrics(serving: ServingCounters, accounting: AccountingSnapshot) -> bytes:
    """Prometheus text exposition (version 0.0.4) of both sources; serve it with CONTENT_TYPE."""
    registry = CollectorRegistry(auto_describe=True)  # describe = collect: catches duplicate names
    registry.register(CloverCollector(serving, accounting))
    return generate_latest(registry)
