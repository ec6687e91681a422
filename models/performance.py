"""Performance model: latency, throughput, dynamic power and memory of a variant on a slice
(a MIG instance or an MPS share).

Fitted to profiles measured on one GPU type (the bundled H100 files in configs/profiles, or
`gpu-node profile` output of the same JSON shape); the formulas, their assumptions and the
fit error are in docs/performance-model.md. Other GPU types are scaled from the measured
one with the catalog's `relative_speed`, SM counts and power range.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from configs.loader import load_gpu_catalog, profile_paths
from configs.schema import GpuCatalog, GpuType
from models.performance_fit import VariantFit, fit_all
from models.profile_points import ProfilePoint, load_points, profile_catalog

# Latency factor per partitioning, applied to slices smaller than the whole GPU. The bundled H100
# data were measured on MPS shares (one process alone on 12/24/45/48 % of the SMs), so MPS is 1.0
# by construction. A MIG slice also gets only its own part of the L2 cache and of the memory
# bandwidth, which an MPS share alone on the GPU does not lose: a MIG slice is at most as fast,
# so its factor is >= 1. No MIG slice has been measured yet (the lent GPUs run with MIG off),
# so it is 1.0 too — optimistic for MIG — until `gpu-node profile` on MIG slices says more
# (docs/performance-model.md, docs/mps.md).
DEFAULT_PARTITION_FACTORS: Mapping[str, float] = {"mig": 1.0, "mps": 1.0}

# Device memory a CUDA + PyTorch process holds before any tensor (context, cuBLAS/cuDNN
# workspaces). Not in the profiles (they record tensor peaks only); typical H100 value.
CUDA_CONTEXT_GIB = 0.5


class PerformanceModel:
    """Predictions per variant × GPU type × compute slices × batch, fp16 (the serving dtype).

    Implements `models.protocol.PerfModel`. `partition_factors` ({"mig": x, "mps": y}, missing
    ones from DEFAULT_PARTITION_FACTORS) multiply the latency of slices smaller than the whole GPU
    by the factor of the GPU type's partitioning (configs/gpus.yaml `partitioning`).
    """

    def __init__(self, fits: dict[str, VariantFit], reference_gpu_type: str,
                 points: tuple[ProfilePoint, ...] = (), catalog: GpuCatalog | None = None,
                 partition_factors: Mapping[str, float] | None = None) -> None:
        factors = {**DEFAULT_PARTITION_FACTORS, **(partition_factors or {})}
        bad = {k: v for k, v in factors.items() if k not in DEFAULT_PARTITION_FACTORS or v < 1.0}
        if bad:
            raise ValueError(f"partition_factors {bad}: keys are {sorted(DEFAULT_PARTITION_FACTORS)} and factors "
                             "must be >= 1 (a slice is never faster than one measured alone on an MPS share)")
        self._fits = fits
        self._catalog = catalog or load_gpu_catalog()
        self.reference_gpu_type = reference_gpu_type
        self.points = points
        self.partition_factors = factors

    # -- construction -------------------------------------------------------------------
    @classmethod
    def default(cls) -> PerformanceModel:
        """The model fitted to the bundled H100 profiles (configs/profiles); cached."""
        return _default_model()

    @classmethod
    def from_profiles(cls, paths: Iterable[str | Path],
                      partition_factors: Mapping[str, float] | None = None) -> PerformanceModel:
        """Fitted to measured profiles of one device type (a GPU's, or this host's CPU: then the catalog's
        CPU entry takes the cores and power figures the profile records, models/profile_points.py)."""
        paths = list(paths)
        catalog = profile_catalog(paths)
        points = load_points(paths, catalog)
        return cls(fit_all(points), points[0].gpu_type, tuple(points), catalog=catalog,
                   partition_factors=partition_factors)

    # -- lookups ------------------------------------------------------------------------
    def variants(self) -> list[str]:
        return sorted(self._fits)

    def fit(self, variant_key: str) -> VariantFit:
        """The fitted coefficients of a variant (on the reference GPU)."""
        try:
            return self._fits[variant_key]
        except KeyError:
            raise KeyError(
                f"unknown variant {variant_key!r}: no profile for it; known: {', '.join(self.variants())} "
                f"(variant keys are configs/services.yaml profile_key values)"
            ) from None

    def _gpu(self, gpu_type: str) -> GpuType:
        return self._catalog.get(gpu_type)

    def slice_sms_fraction(self, gpu_type: str, compute_slices: int) -> float:
        """Share of the GPU's SMs in the main MIG profile with that many compute slices."""
        gt = self._gpu(gpu_type)
        for p in self._catalog.main_profiles(gpu_type):
            if p.compute_slices == compute_slices:
                return p.sms / gt.total_sms
        known = sorted(p.compute_slices for p in self._catalog.main_profiles(gpu_type))
        raise ValueError(f"compute_slices={compute_slices!r} is not a main MIG profile of {gpu_type}; use one of {known}")

    def _speed(self, gpu_type: str) -> float:
        return self._gpu(gpu_type).relative_speed / self._gpu(self.reference_gpu_type).relative_speed

    @staticmethod
    def _check_batch(batch: int) -> None:
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")

    # -- predictions --------------------------------------------------------------------
    def batch_latency_ms(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float:
        """Mean service time of one batch on an otherwise idle slice."""
        self._check_batch(batch)
        fit = self.fit(variant_key)
        f = self.slice_sms_fraction(gpu_type, compute_slices)
        gpu_ms = (fit.d_ms * batch + fit.c_ms * batch / f) / self._speed(gpu_type)
        lat = fit.a_ms + gpu_ms
        gt = self._gpu(gpu_type)
        return lat * self.partition_factors[gt.partitioning] if compute_slices < gt.compute_slices else lat

    def throughput_rps(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float:
        """Items per second of a slice that runs back-to-back batches."""
        return batch * 1000.0 / self.batch_latency_ms(variant_key, gpu_type, compute_slices, batch)

    def busy_power_w(self, variant_key: str, gpu_type: str, compute_slices: int, batch: int) -> float:
        """Power above the GPU's idle power while this slice runs batches (the slice alone busy)."""
        self._check_batch(batch)
        fit = self.fit(variant_key)
        f = self.slice_sms_fraction(gpu_type, compute_slices)
        gt, ref = self._gpu(gpu_type), self._gpu(self.reference_gpu_type)
        scale = (gt.max_power_w - gt.idle_power_w) / (ref.max_power_w - ref.idle_power_w)
        return min(fit.power_w(f, batch) * scale, gt.max_power_w - gt.idle_power_w)

    def idle_power_w(self, gpu_type: str) -> float:
        """Whole-GPU power with nothing running (catalog value)."""
        return self._gpu(gpu_type).idle_power_w

    def max_power_w(self, gpu_type: str) -> float:
        """Whole-GPU power limit (catalog value): concurrent busy slices cannot draw more."""
        return self._gpu(gpu_type).max_power_w

    def memory_gib(self, variant_key: str, batch: int) -> float:
        """Device memory of one replica: tensor peak at this batch + CUDA context."""
        self._check_batch(batch)
        fit = self.fit(variant_key)
        return fit.mem0_gib + fit.mem_per_item_gib * batch + CUDA_CONTEXT_GIB

    def latency_p99_ratio(self, variant_key: str) -> float:
        """Measured p99/p50 of single-batch latency (median over the variant's runs)."""
        return self.fit(variant_key).p99_ratio


@cache
def _default_model() -> PerformanceModel:
    return PerformanceModel.from_profiles(profile_paths())
