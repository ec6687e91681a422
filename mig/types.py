"""Value types shared by the placement model, the backends and the planner."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Placement:
    """One GPU instance in a layout: a profile (by name, e.g. `3g.40gb`) at a start slot."""

    profile: str
    start: int

    def to_json(self) -> dict:
        return {"profile": self.profile, "start": self.start}

    @classmethod
    def from_json(cls, d: dict) -> Placement:
        return cls(profile=str(d["profile"]), start=int(d["start"]))


# A layout is the set of GPU instances of one GPU, sorted by (start, profile) for stable output.
Layout = tuple[Placement, ...]


def canonical(layout: list[Placement] | tuple[Placement, ...]) -> Layout:
    """The canonical (sorted) form of a layout, so equal layouts compare equal."""
    return tuple(sorted(layout, key=lambda p: (p.start, p.profile)))


@dataclass(frozen=True)
class GpuInstance:
    """A slice that exists on a device, as a backend sees it: a MIG GPU instance (with its compute
    instance) or an MPS share (bookkeeping only; the GPU itself is not changed)."""

    gpu_index: int
    gi_id: int
    profile: str
    profile_id: int
    start: int
    size: int
    uuid: str  # MIG-… device UUID (MIG) or the GPU's UUID (an MPS share): what CUDA_VISIBLE_DEVICES takes

    @property
    def placement(self) -> Placement:
        return Placement(self.profile, self.start)


@dataclass(frozen=True)
class GpuInfo:
    """A physical GPU as a backend sees it."""

    index: int
    uuid: str  # GPU-…
    name: str  # product name, e.g. "NVIDIA H100 80GB HBM3"
    gpu_type: str  # catalog key, e.g. "H100-80GB" (MIG) or "H100-80GB-MPS" (MPS shares)
    enabled: bool  # can be partitioned now: MIG mode on, or the MPS control daemon running
    partitioning: str = "mig"  # "mig" or "mps"

    @property
    def mig_enabled(self) -> bool:
        return self.partitioning == "mig" and self.enabled
