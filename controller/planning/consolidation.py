"""Merging a split GPU back into one whole instance once it has stayed idle long enough.

The planner re-partitions a GPU when the plan needs smaller slices (a load peak wants more
replicas than there are GPUs) but never merges one back for its own sake: an idle GPU draws the
same idle power whatever its layout, so the objective cannot tell a split idle GPU from a whole
one, and `decode` keeps an idle GPU's layout to spare MIG operations. Left at that, a GPU split
for one peak stays split for good, and the next plan that wants the most accurate variant on a
whole GPU there must first re-partition it while the load waits.

So the live loop consolidates, the way a cluster autoscaler removes a node only after it has
been unneeded for a while: a GPU that every plan has left idle and split for `after_s` seconds
of wall time is merged back into one whole-GPU instance. The wait is the hysteresis: a GPU idle
only between two bursts keeps its slices (no MIG operations spent on a swing of load), and
usually nothing is drained, since no replica of the plan runs there (one still stopping is
drained first, as for any change). Pure: the caller keeps `idle_clocks` with the desired state,
so a restarted controller keeps counting, and says which GPUs must keep their layout (held by
the reconciler, or with slices other Ray work has borrowed).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from controller.planning.plan import GpuPlan, Plan, SliceAssignment
from mig.placement import whole_gpu


@dataclass(frozen=True)
class Consolidation:
    """The plan with long-idle split GPUs merged, and which were merged."""

    plan: Plan
    merged: dict[str, float]  # GPU merged back into one instance -> seconds it had been split and idle


def is_split_and_idle(gpu: GpuPlan) -> bool:
    """No replica planned on the GPU and its layout is not one whole instance (several slices,
    or a single smaller one): what the rule may merge."""
    return all(s.variant is None for s in gpu.slices) and gpu.layout != whole_gpu(gpu.gpu_type)


def idle_clocks(plan: Plan, idle_since: Mapping[str, float], now: float,
                keep: Collection[str] = (), before: Plan | None = None) -> dict[str, float]:
    """The clocks after `plan` becomes desired: each GPU it leaves split and idle -> the wall time
    since which every plan has (its clock in `idle_since`, or `now` for one idle from this plan
    on). A GPU in `keep` (held) has no clock: its wait starts again once it is free to change. One
    whose layout differs from `before` (the plan that was desired) starts again too: a new layout,
    say an operator's re-split, is a new decision, not the old one's wait."""
    old = {g.gpu_id: g.layout for g in before.gpus} if before else {}
    return {g.gpu_id: idle_since.get(g.gpu_id, now) if old.get(g.gpu_id, g.layout) == g.layout else now
            for g in plan.gpus if g.gpu_id not in keep and is_split_and_idle(g)}


def merge_idle(plan: Plan, idle_since: Mapping[str, float], now: float, after_s: float,
               keep: Collection[str] = (), before: Plan | None = None) -> Consolidation:
    """`plan` with each GPU that it leaves split and idle, and whose clock (`idle_clocks`) started
    at least `after_s` seconds before `now`, turned into one idle whole-GPU instance. `keep`: GPUs
    whose layout must not change. `after_s` 0 never merges."""
    due = {gid: now - start for gid, start in idle_clocks(plan, idle_since, now, keep, before).items()
           if after_s > 0 and now - start >= after_s}
    if not due:
        return Consolidation(plan, {})
    gpus = tuple(replace(g, slices=tuple(SliceAssignment(p, None, 1, 0.0) for p in whole_gpu(g.gpu_type)))
                 if g.gpu_id in due else g for g in plan.gpus)
    return Consolidation(replace(plan, gpus=gpus), due)
