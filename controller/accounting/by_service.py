"""One interval's account split by service, when several services share the GPUs.

The cluster's account (controller/accounting/attribution.py) already gives every slice its share of
its GPU's measured energy. Each service is charged the slices that ran its replicas; the slices
that ran none — an idle slice, or the compute slices no MIG instance occupies — go to the
`unallocated` bucket, charged to no service, so capacity nobody uses stays visible instead of
inflating a service's carbon. Host CPU/DRAM energy and embodied carbon, which no slice owns, are
split by each service's part of the cluster (its Base's part, controller/planning/joint.py), as is
`base`: each service's Base runs on its part of the cluster. So the services' rows and the
`unallocated` row add up to the metered total, and their baselines to the cluster's.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace

from configs.units import carbon_g
from controller.accounting.attribution import (
    IDLE_VARIANT,
    UNALLOCATED_VARIANT,
    Accountant,
    IntervalAccount,
)

UNALLOCATED_SERVICE = "unallocated"


def split_by_service(account: IntervalAccount, accountant: Accountant, shares: Mapping[str, float],
                     p95_ms: Mapping[str, float | None], failed: Mapping[str, int]) -> dict[str, IntervalAccount]:
    """Per service (and `unallocated`): its slices' energy, its requests, accuracy, p95 and Base.

    `shares`: each service's part of the cluster (summing to one); `p95_ms`/`failed`: per service,
    from the ingress counters."""
    owner_of_slice = {k: _service_of(v, accountant) for k, v in account.slice_variants.items()}
    out: dict[str, IntervalAccount] = {}
    for name in [*(s.name for s in accountant.services), UNALLOCATED_SERVICE]:
        share = shares.get(name, 0.0)
        slices = {k: j for k, j in account.energy_by_slice.items() if owner_of_slice[k] == name}
        requests_by_variant = {v: n for v, n in account.requests_by_variant.items()
                               if _service_of(v, accountant) == name}
        requests = sum(requests_by_variant.values())
        service = next((s for s in accountant.services if s.name == name), None)
        baseline_j = (0.0 if service is None else
                      accountant.baseline_energy_j(service, account.duration_s, requests, share))
        out[name] = _part(account, slices, requests_by_variant, share, baseline_j,
                          p95_ms.get(name), failed.get(name, 0),
                          (math.fsum(n * accountant.accuracy_of(v) for v, n in requests_by_variant.items()) / requests
                           if requests else None),
                          service.base.accuracy if service else 0.0)
    return out


def _service_of(variant: str, accountant: Accountant) -> str:
    if variant in (IDLE_VARIANT, UNALLOCATED_VARIANT) or variant not in accountant.owner:
        return UNALLOCATED_SERVICE
    return accountant.owner[variant].name


def _part(account: IntervalAccount, slices: Mapping[str, float], requests_by_variant: Mapping[str, int],
          share: float, baseline_j: float, p95_ms: float | None, failed: int, accuracy: float | None,
          baseline_accuracy: float) -> IntervalAccount:
    """The account of one part of the cluster: these slices, `share` of what no slice owns."""
    def co2(joules: float) -> float:
        return carbon_g(joules, account.carbon_intensity, account.pue)

    by_gpu: dict[str, float] = defaultdict(float)
    by_variant: dict[str, float] = defaultdict(float)
    for k, j in slices.items():
        by_gpu[k.rsplit("/", 1)[0]] += j
        by_variant[account.slice_variants[k]] += j
    energy = math.fsum(slices.values())
    embodied = account.embodied_g * share
    host_g = account.host_carbon_g * share
    carbon_by_variant = {v: co2(j) for v, j in by_variant.items()}
    return replace(
        account, energy_j=energy, energy_by_gpu=dict(by_gpu), energy_by_slice=dict(slices),
        slice_variants={k: account.slice_variants[k] for k in slices}, energy_by_variant=dict(by_variant),
        carbon_g=co2(energy) + embodied + host_g, carbon_by_gpu={g: co2(j) for g, j in by_gpu.items()},
        carbon_by_slice={k: co2(j) for k, j in slices.items()}, carbon_by_variant=carbon_by_variant,
        carbon_per_request_g={v: carbon_by_variant.get(v, 0.0) / n for v, n in requests_by_variant.items() if n},
        embodied_g=embodied, baseline_energy_j=baseline_j,
        baseline_carbon_g=(co2(baseline_j) + embodied + host_g) if baseline_j else 0.0,
        requests=sum(requests_by_variant.values()), requests_by_variant=dict(requests_by_variant), failed=failed,
        accuracy=accuracy, baseline_accuracy=baseline_accuracy, p95_ms=p95_ms,
        cpu_energy_j=account.cpu_energy_j * share, ram_energy_j=account.ram_energy_j * share, host_carbon_g=host_g)
