"""The plan the controller hands to GPU nodes: per GPU a MIG layout, per slice a variant.

Produced by the planner (controller/planning/planner.py), consumed by the control loop, the
trace-replay simulator and the Serve router. Pure data, JSON round-trippable. `diff_gpu` is the
one plan diff: what moving a GPU from one plan to another stops, starts and re-partitions
(the control loop's rollout, the planner's switching cost and the replay's downtime use it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mig.types import Layout, Placement, canonical


@dataclass(frozen=True)
class SliceAssignment:
    """One MIG slice: where it sits, what it serves, and the share of the service's traffic."""

    placement: Placement
    variant: str | None  # None: the slice exists but idles (no replica)
    batch: int = 1
    share: float = 0.0  # fraction of its service's request rate routed to this replica
    service: str = ""  # the service the replica serves in a joint plan ("": the plan's one service)

    def to_json(self) -> dict:
        out = {**self.placement.to_json(), "variant": self.variant, "batch": self.batch, "share": self.share}
        return {**out, "service": self.service} if self.service else out

    @classmethod
    def from_json(cls, d: dict) -> "SliceAssignment":
        return cls(Placement.from_json(d), d.get("variant"), int(d.get("batch", 1)), float(d.get("share", 0.0)),
                   str(d.get("service", "")))


@dataclass(frozen=True)
class GpuPlan:
    """The plan for one GPU. An empty `slices` means the GPU is left idle (powered down to idle)."""

    gpu_id: str  # stable id, e.g. "node0/gpu0" or the GPU UUID
    gpu_type: str
    slices: tuple[SliceAssignment, ...]

    @property
    def layout(self) -> Layout:
        return canonical([s.placement for s in self.slices])

    def to_json(self) -> dict:
        return {"gpu_id": self.gpu_id, "gpu_type": self.gpu_type, "slices": [s.to_json() for s in self.slices]}

    @classmethod
    def from_json(cls, d: dict) -> "GpuPlan":
        return cls(d["gpu_id"], d["gpu_type"], tuple(SliceAssignment.from_json(s) for s in d["slices"]))


@dataclass(frozen=True)
class Prediction:
    """What the performance model predicts for a plan at the rate and carbon intensity it was solved for."""

    power_w: float = 0.0  # average GPU power of all GPUs in the plan (idle included)
    carbon_g_per_h: float = 0.0  # power × CI × PUE
    accuracy: float = 0.0  # request-weighted
    p95_ms: float = 0.0  # worst replica's predicted p95
    objective: float = 0.0  # Clover's λ·ΔC − (1−λ)·ΔA


@dataclass(frozen=True)
class Plan:
    service: str
    gpus: tuple[GpuPlan, ...]
    rate_rps: float = 0.0
    carbon_intensity: float = 0.0
    predicted: Prediction = field(default_factory=Prediction)
    solve_ms: float = 0.0

    def replicas(self) -> list[tuple[GpuPlan, SliceAssignment]]:
        """Every slice that serves a variant, with its GPU."""
        return [(g, s) for g in self.gpus for s in g.slices if s.variant is not None]

    def to_json(self) -> dict:
        p = self.predicted
        return {
            "service": self.service,
            "rate_rps": self.rate_rps,
            "carbon_intensity": self.carbon_intensity,
            "solve_ms": self.solve_ms,
            "predicted": p.__dict__,
            "gpus": [g.to_json() for g in self.gpus],
        }

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(
            d["service"],
            tuple(GpuPlan.from_json(g) for g in d["gpus"]),
            float(d.get("rate_rps", 0.0)),
            float(d.get("carbon_intensity", 0.0)),
            Prediction(**d.get("predicted", {})),
            float(d.get("solve_ms", 0.0)),
        )


# ---- the plan diff -------------------------------------------------------------------------
SliceKey = tuple[str, int, str, int]  # (profile, start, variant, batch): one replica's identity


def slice_key(s: SliceAssignment) -> SliceKey:
    """A replica's identity. The service is implied: variant names are unique across the services
    served together (controller/planning/joint.py checks), so plans and what runs compare alike
    whether or not a slice names its service."""
    return (s.placement.profile, s.placement.start, s.variant or "", s.batch)


@dataclass(frozen=True)
class GpuChange:
    """What moving one GPU from `old` to `new` means (traffic shares are ignored)."""

    gpu_id: str
    stop: tuple[SliceAssignment, ...]  # replicas that go away
    start_kept: tuple[SliceAssignment, ...]  # new replicas on slices that stay (no MIG op needed)
    start_new: tuple[SliceAssignment, ...]  # new replicas on slices that must be created
    mig_ops: int  # MIG instances destroyed + created

    @property
    def layout_changes(self) -> bool:
        return self.mig_ops > 0

    @property
    def starts(self) -> tuple[SliceAssignment, ...]:
        return self.start_kept + self.start_new

    @property
    def is_noop(self) -> bool:
        return not (self.stop or self.starts or self.mig_ops)


def diff_gpu(old: GpuPlan | None, new: GpuPlan) -> GpuChange:
    """Replicas to stop/start and the MIG operations to move one GPU from `old` to `new`."""
    old_slices = old.slices if old else ()
    old_layout = set(old.layout) if old else set()
    new_layout = set(new.layout)
    old_keys = {slice_key(s) for s in old_slices if s.variant}
    new_keys = {slice_key(s) for s in new.slices if s.variant}
    stop = tuple(s for s in old_slices if s.variant and slice_key(s) not in new_keys)
    starts = [s for s in new.slices if s.variant and slice_key(s) not in old_keys]
    kept = old_layout & new_layout
    return GpuChange(
        gpu_id=new.gpu_id,
        stop=stop,
        start_kept=tuple(s for s in starts if s.placement in kept),
        start_new=tuple(s for s in starts if s.placement not in kept),
        mig_ops=len(old_layout ^ new_layout),
    )


def diff_plans(old: Plan | None, new: Plan) -> dict[str, GpuChange]:
    """The GPUs of `new` that change, with what changes on each."""
    before = {g.gpu_id: g for g in old.gpus} if old else {}
    changes = (diff_gpu(before.get(g.gpu_id), g) for g in new.gpus)
    return {c.gpu_id: c for c in changes if not c.is_noop}


def plan_changed(old: Plan | None, new: Plan) -> bool:
    """True if any GPU's layout, variants or batches differ (a share-only change is not a change)."""
    if old is None:
        return True
    return bool(diff_plans(old, new)) or {g.gpu_id for g in old.gpus} != {g.gpu_id for g in new.gpus}


def describe(plan: Plan) -> str:
    """`node0/gpu0[4g.40gb:b4×b8, 3g.40gb:-]`: one GPU per field, for run.log lines."""
    parts = []
    for g in plan.gpus:
        sl = ", ".join(f"{s.placement.profile}:{s.variant or '-'}" + (f"×b{s.batch}" if s.variant else "")
                       for s in g.slices)
        parts.append(f"{g.gpu_id}[{sl or 'idle'}]")
    return " ".join(parts)
