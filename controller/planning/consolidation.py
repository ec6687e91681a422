"""Merging a split GPU back into one whole instance once it has stayed idle long enough.

The planner re-partitions a GPU when the plan needs smaller slices (a load peak wants more
replicas than there are GPUs) but never merges one back for its own sake: an idle GPU draws the
same idle power whatever its layout, so the objective cannot tell a split idle GPU from a whole
one, and `decode` keeps an idle GPU's layout to spare MIG operations. Left at that, a GPU split
for one peak stays split for good, and the next plan that wants the most accurate variant on a
whole GPU there must first re-partition it while the load waits.

So the live loop consolidates, the way a cluster autoscaler removes a node only after it has
been unneeded for a while: a GPU that every plan has left idle, with more than one instance,
for `after_s` seconds of wall time is merged back into one whole-GPU instance. The wait is the
hysteresis: a GPU idle only between two bursts keeps its slices (no MIG operations spent on a
swing of load), and nothing is drained, since no replica runs there. Pure: the caller persists
`idle_since` with the desired state, so a restarted controller keeps counting.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from controller.planning.plan import GpuPlan, Plan, SliceAssignment
from mig.placement import slice_multisets
from mig.types import Layout


@dataclass(frozen=True)
class Consolidation:
    """The plan with long-idle split GPUs merged, and what the next decision needs."""

    plan: Plan
    idle_since: dict[str, float]  # split GPUs the plans leave idle -> wall time they became so
    merged: tuple[str, ...]  # GPUs merged back into one instance by this decision


def whole_gpu(gpu_type: str) -> Layout:
    """The layout of one instance over the whole GPU (7g.80gb@0 on an H100-80GB)."""
    multisets = slice_multisets(gpu_type)
    return multisets[(max(s for m in multisets for s in m),)]


def is_split_and_idle(gpu: GpuPlan) -> bool:
    return len(gpu.slices) > 1 and all(s.variant is None for s in gpu.slices)


def merge_idle(plan: Plan, idle_since: Mapping[str, float], now: float, after_s: float,
               keep: Collection[str] = ()) -> Consolidation:
    """`plan` with each GPU that has been split and idle in every plan since `after_s` seconds
    before `now` turned into one idle whole-GPU instance. `keep`: GPUs whose layout must not
    change (held by the reconciler). `after_s` 0 never merges (the clock is still kept)."""
    since: dict[str, float] = {}
    merged: list[str] = []
    gpus: list[GpuPlan] = []
    for g in plan.gpus:
        if g.gpu_id in keep or not is_split_and_idle(g):
            gpus.append(g)
            continue
        start = idle_since.get(g.gpu_id, now)
        if after_s > 0 and now - start >= after_s:
            gpus.append(replace(g, slices=tuple(SliceAssignment(p, None, 1, 0.0) for p in whole_gpu(g.gpu_type))))
            merged.append(g.gpu_id)
        else:
            gpus.append(g)
            since[g.gpu_id] = start
    return Consolidation(replace(plan, gpus=tuple(gpus)) if merged else plan, since, tuple(merged))
