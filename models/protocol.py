"""The one performance-model protocol: what planning, accounting and the simulated GPU ask of it.

`models.performance.PerformanceModel` implements it; small hand-written models in tests do too.
Every prediction is for one variant (a `configs/services.yaml` profile key) on a slice of
`compute_slices`/7 of a catalog GPU type — a MIG instance or an MPS share, as the GPU type's
`partitioning` says — at one batch size.
"""
from __future__ import annotations

from typing import Protocol


class PerfModel(Protocol):
    def batch_latency_ms(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float:
        """Mean service time of one batch on an otherwise idle slice."""
        ...

    def throughput_rps(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float:
        """Items per second of a slice that runs back-to-back batches."""
        ...

    def busy_power_w(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float:
        """Power above the GPU's idle power while this slice runs batches."""
        ...

    def idle_power_w(self, gpu_type: str) -> float: ...

    def max_power_w(self, gpu_type: str) -> float: ...

    def memory_gib(self, variant_key: str, batch: int) -> float:
        """Device memory one replica needs at this batch size."""
        ...

    def latency_p99_ratio(self, variant_key: str) -> float:
        """p99 / p50 of single-batch latency."""
        ...
