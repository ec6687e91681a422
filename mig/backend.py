"""The one small protocol every MIG backend implements (simulated, nvidia-smi).

The node agent and `gpu-node mig` talk only to this protocol, so the same control code runs
on the simulated cluster and on a real GPU node.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from mig.types import GpuInfo, GpuInstance

BACKENDS = ("simulated", "nvidia-smi")


@runtime_checkable
class MigBackend(Protocol):
    def list_gpus(self) -> list[GpuInfo]: ...

    def set_mig_mode(self, gpu: int, enabled: bool) -> str:
        """Switch MIG mode; returns the tool's message (it may say a GPU reset is pending)."""
        ...

    def list_instances(self, gpu: int) -> list[GpuInstance]:
        """GPU instances of one GPU ([] when MIG is disabled, as `nvidia-smi mig -lgi` reports)."""
        ...

    def create_instance(self, gpu: int, profile: str, start: int) -> GpuInstance:
        """Create a GPU instance with an explicit placement and its full compute instance (`-cgi P:S -C`)."""
        ...

    def destroy_instance(self, gpu: int, gi_id: int) -> None:
        """Destroy the compute instance(s) then the GPU instance (`-dci`, `-dgi`)."""
        ...


def make_backend(name: str, *, state_file: str | Path | None = None,
                 gpus: Sequence[tuple[str, int]] | None = None, binary: str = "nvidia-smi") -> MigBackend:
    """Build a backend by its CLI name (`simulated`, `nvidia-smi`)."""
    if name == "simulated":
        from mig.simulated import SimulatedMigBackend

        return SimulatedMigBackend(gpus=gpus, state_file=Path(state_file) if state_file else None)
    if name == "nvidia-smi":
        from mig.nvidia_smi import NvidiaSmiBackend

        return NvidiaSmiBackend(binary=binary)
    raise ValueError(f"unknown MIG backend {name!r}; choose one of: {', '.join(BACKENDS)}")
