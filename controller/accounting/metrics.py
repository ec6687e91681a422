"""Prometheus metrics of the controller, on a registry of its own (not the process-global one,
so tests and several controllers in one process never collide). `render()` is the body of
GET /metrics.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controller.accounting.attribution import IntervalAccount
from controller.carbon.base import CarbonReading

CONTENT_TYPE = CONTENT_TYPE_LATEST


class CloverMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.energy = Counter("clover_energy_joules", "GPU energy attributed to a slice and variant",
                              ["service", "gpu", "slice", "variant"], registry=r)
        self.carbon = Counter("clover_carbon_grams", "Operational carbon attributed to a slice and variant (gCO2eq)",
                              ["service", "gpu", "slice", "variant"], registry=r)
        self.carbon_total = Counter("clover_carbon_total_grams", "Carbon of the whole deployment incl. embodied (gCO2eq)",
                                    ["service"], registry=r)
        self.baseline = Counter("clover_baseline_carbon_grams",
                                "Carbon `base` (largest variant on 7g everywhere) would have emitted (gCO2eq)",
                                ["service"], registry=r)
        self.requests = Counter("clover_requests", "Requests served, by variant", ["service", "variant"], registry=r)
        self.failed = Counter("clover_requests_failed", "Requests that failed", ["service"], registry=r)
        self.plan_changes = Counter("clover_plan_changes", "Plans applied that changed the deployment",
                                    ["service"], registry=r)
        self.intensity = Gauge("clover_carbon_intensity_gco2_per_kwh", "Current grid carbon intensity",
                               ["service", "source"], registry=r)
        self.intensity_stale = Gauge("clover_carbon_intensity_stale",
                                     "1 when the carbon intensity is the last good value after a failed refresh",
                                     ["service", "source"], registry=r)
        self.accuracy = Gauge("clover_accuracy", "Request-weighted accuracy of the last interval", ["service"], registry=r)
        self.p95 = Gauge("clover_p95_latency_ms", "p95 latency of the last interval (ms)", ["service"], registry=r)
        self.estimated = Gauge("clover_energy_estimated", "1 when the last interval's energy is (partly) estimated",
                               ["service"], registry=r)

    def observe_interval(self, a: IntervalAccount) -> None:
        s = self.service
        for key, joules in a.energy_by_slice.items():
            gpu, _, slice_id = key.rpartition("/")
            variant = a.slice_variants[key]
            self.energy.labels(s, gpu, slice_id, variant).inc(joules)
            self.carbon.labels(s, gpu, slice_id, variant).inc(a.carbon_by_slice[key])
        self.carbon_total.labels(s).inc(a.carbon_g)
        self.baseline.labels(s).inc(a.baseline_carbon_g)
        for variant, n in a.requests_by_variant.items():
            self.requests.labels(s, variant).inc(n)
        self.failed.labels(s).inc(a.failed)
        if a.accuracy is not None:
            self.accuracy.labels(s).set(a.accuracy)
        if a.p95_ms is not None:
            self.p95.labels(s).set(a.p95_ms)
        self.estimated.labels(s).set(1 if a.estimated else 0)

    def observe_carbon(self, reading: CarbonReading) -> None:
        self.intensity.labels(self.service, reading.source).set(reading.value_gco2_per_kwh)
        self.intensity_stale.labels(self.service, reading.source).set(1 if reading.stale else 0)

    def plan_changed(self) -> None:
        self.plan_changes.labels(self.service).inc()

    def render(self) -> bytes:
        """Prometheus text exposition of this registry (serve with CONTENT_TYPE)."""
        return generate_latest(self.registry)
