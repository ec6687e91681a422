"""Re-partition a GPU from its current instances to a target layout with the fewest operations.

An instance that is in both the current and the target layout (same profile, same start) is kept
untouched, so the replica running on it keeps serving while the rest of the GPU changes; every
other current instance is destroyed and every missing target instance created. No plan can do
with fewer operations: each instance that differs must be destroyed or created at least once.
Destroys run first because a target instance may need the slots a destroyed one frees; creates
always use explicit placements, so their order does not matter to the driver.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mig.backend import MigBackend
from mig.errors import MigError
from mig.types import GpuInstance, Layout, Placement, canonical

# on_op(op, placement, duration_s, error): op is "create" or "destroy"; error is None on success.
OpCallback = Callable[[str, Placement, float, "MigError | None"], None]


@dataclass(frozen=True)
class RepartitionPlan:
    keep: Layout
    destroy: tuple[GpuInstance | Placement, ...]
    create: Layout
    target: Layout

    @property
    def op_count(self) -> int:
        return len(self.destroy) + len(self.create)

    @property
    def is_noop(self) -> bool:
        return self.op_count == 0


def _placement(x: GpuInstance | Placement) -> Placement:
    return x.placement if isinstance(x, GpuInstance) else x


def plan_repartition(current: Sequence[GpuInstance | Placement], target: Sequence[Placement]) -> RepartitionPlan:
    """Keep what is in both, destroy the rest of `current`, create the rest of `target` (pure)."""
    wanted = set(canonical(target))
    have = {_placement(x) for x in current}
    keep = canonical([p for p in have if p in wanted])
    destroy = tuple(sorted((x for x in current if _placement(x) not in wanted),
                           key=lambda x: (_placement(x).start, _placement(x).profile)))
    create = canonical([p for p in wanted if p not in have])
    return RepartitionPlan(keep=keep, destroy=destroy, create=create, target=canonical(target))


def apply_plan(backend: MigBackend, gpu_index: int, plan: RepartitionPlan,
               on_op: OpCallback | None = None) -> list[GpuInstance]:
    """Carry a plan out on one GPU: destroys, then creates; returns the created instances.

    Instances to destroy are looked up on the backend by placement (their GI IDs are the
    driver's, not the planner's). Each operation is reported to `on_op` (the control loop logs
    them as `mig_op` events), failures too; the first failure stops the plan and is re-raised,
    leaving the GPU in a state `plan_repartition` can start from again.
    """
    def run(op: str, placement: Placement, action: Callable[[], object]) -> object:
        t0 = time.perf_counter()
        try:
            result = action()
        except MigError as exc:
            if on_op:
                on_op(op, placement, time.perf_counter() - t0, exc)
            raise
        if on_op:
            on_op(op, placement, time.perf_counter() - t0, None)
        return result

    if plan.destroy:
        by_placement = {i.placement: i for i in backend.list_instances(gpu_index)}
        for x in plan.destroy:
            p = _placement(x)
            inst = by_placement.get(p)
            if inst is None:
                raise MigError(f"GPU {gpu_index} has no {p.profile} instance at slot {p.start} to destroy; "
                               "re-plan from backend.list_instances()")
            run("destroy", p, lambda inst=inst: backend.destroy_instance(gpu_index, inst.gi_id))
    created: list[GpuInstance] = []
    for p in plan.create:
        created.append(run("create", p, lambda p=p: backend.create_instance(gpu_index, p.profile, p.start)))
    return created
