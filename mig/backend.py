"""The node-side partition protocol every backend implements (MIG: simulated, nvidia-smi; MPS).

The node agent and `gpu-node mig` talk only to `PartitionBackend`, so the same control code runs
on the simulated cluster, on a real MIG node and on a GPU partitioned by MPS shares. A slice is
a `GpuInstance` either way; `slice_env` says what a process on it must have in its environment
(a MIG device UUID, or the GPU UUID plus MPS limits). MIG-only operations (switching MIG mode)
are in `MigBackend`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from configs.loader import load_gpu_catalog
from mig.mps import MpsBackend, MpsControl, MpsDaemon, SimulatedDaemon
from mig.nvidia_smi import NvidiaSmiBackend, gpu_type_for_product
from mig.simulated import SimulatedMigBackend, SliceUsers, expand_gpus, no_users, simulated_identity
from mig.types import GpuInfo, GpuInstance

BACKENDS = ("simulated", "nvidia-smi")  # where the GPUs come from
PARTITIONINGS = ("mig", "mps")  # how they are cut into slices
# A node's files in its state directory (configs.cluster.node_state_dir): the partition state
# (simulated MIG instances, MPS shares; a real MIG node keeps none: the driver holds it) and leases.
STATE_FILES = {"mig": "mig-state.json", "mps": "mps-state.json"}
LEASES_FILE = "leases.json"


@runtime_checkable
class PartitionBackend(Protocol):
    partitioning: str  # "mig" or "mps"

    def list_gpus(self) -> list[GpuInfo]: ...

    def list_instances(self, gpu: int) -> list[GpuInstance]:
        """Slices of one GPU ([] when it cannot be partitioned now, as `nvidia-smi mig -lgi` reports)."""
        ...

    def create_instance(self, gpu: int, profile: str, start: int) -> GpuInstance:
        """Create a slice with an explicit placement (MIG: `-cgi P:S -C`)."""
        ...

    def destroy_instance(self, gpu: int, gi_id: int) -> None:
        """Destroy a slice; fails "In use by another client" while a process (a live lease) uses it."""
        ...

    def slice_env(self, gpu: GpuInfo, inst: GpuInstance) -> dict[str, str]:
        """The environment a replica process on this slice must start with."""
        ...


@runtime_checkable
class MigBackend(PartitionBackend, Protocol):
    def set_mig_mode(self, gpu: int, enabled: bool) -> str:
        """Switch MIG mode; returns the tool's message (it may say a GPU reset is pending)."""
        ...


def make_backend(name: str, partitioning: str = "mig", *, state_file: str | Path | None = None,
                 gpus: Sequence[tuple[str, int]] | None = None, binary: str = "nvidia-smi",
                 users: SliceUsers | None = None, daemon: MpsDaemon | None = None) -> PartitionBackend:
    """Build a backend by its CLI names: GPUs from `simulated` or `nvidia-smi`, cut by `mig` or `mps`.

    `users` are the node's live lease holders (simulated MIG and MPS refuse to destroy their
    slices); `daemon` the MPS control daemon (default: the simulated one on simulated GPUs, the
    real one otherwise).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown GPU backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if partitioning not in PARTITIONINGS:
        raise ValueError(f"unknown partitioning {partitioning!r}; choose one of: {', '.join(PARTITIONINGS)}")
    users = users or no_users
    if partitioning == "mig":
        if name == "simulated":
            return SimulatedMigBackend(gpus=gpus, state_file=Path(state_file) if state_file else None, users=users)
        return NvidiaSmiBackend(binary=binary)
    if name == "simulated":
        physical = simulated_mps_gpus(gpus or [("H100-80GB", 1)])
        return MpsBackend(lambda: physical, daemon or SimulatedDaemon(), state_file, users=users)
    return MpsBackend(_smi_mps_gpus(binary), daemon or MpsControl(), state_file, users=users)


def simulated_mps_gpus(gpus: Sequence[tuple[str, int]] | Sequence[str], seed: int = 0) -> list[GpuInfo]:
    """Simulated GPUs for MPS shares; MIG types become their `-MPS` twins (`H100-80GB` -> `H100-80GB-MPS`)."""
    catalog = load_gpu_catalog()
    out = []
    for index, gpu_type in enumerate(expand_gpus(gpus)):
        ident = simulated_identity(index, gpu_type, seed)
        out.append(GpuInfo(index=index, uuid=ident.uuid, name=ident.name,
                           gpu_type=catalog.for_partitioning(gpu_type, "mps"), enabled=True, partitioning="mps"))
    return out


def _smi_mps_gpus(binary: str) -> Callable[[], list[GpuInfo]]:
    """The node's GPUs as nvidia-smi lists them, typed by their MPS catalog entries."""
    smi = NvidiaSmiBackend(binary=binary)

    def gpus() -> list[GpuInfo]:
        return [replace(g, gpu_type=gpu_type_for_product(g.name, "mps"), partitioning="mps") for g in smi.list_gpus()]

    return gpus

