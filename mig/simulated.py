"""A simulated MIG node: the embedded default for `controller demo` and for every test.

It applies the real placement rule (mig/placement.py) and fails the way the driver fails (MIG
disabled, placement conflict, instance in use, unknown profile), with nvidia-smi's wording.
State can live in a JSON file: every operation re-reads it under a file lock and writes it back
atomically, so a restarted node agent, a `gpu-node mig` command and the fake `nvidia-smi` all
see the same instances.

GPU-instance IDs follow the driver's placement tree (observed on A100/H100/RTX PRO: the full GPU
is GI 0, halves 1-2, quarters 3-6, eighths 7-14), so the same placement always gets the same
ID. MIG device UUIDs are version-5 UUIDs like the real ones and change on every re-creation,
which lets tests tell a kept instance from a re-created one.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from configs.loader import load_gpu_catalog
from mig.errors import (
    InstanceInUseError,
    MigDisabledError,
    MigError,
    PlacementError,
    UnknownProfileError,
)
from mig.placement import check_addition, first_free_start, resolve_profile, tree_gi_id
from mig.state_file import StateFile
from mig.types import GpuInfo, GpuInstance, Placement

_NAMESPACE = uuid.UUID("5c1f0c6e-9d3b-4f8e-a1c2-7b0d3e4f5a60")  # Clover's simulated-device namespace
STATE_VERSION = 1

# Who runs on a slice now (`LeaseBook.live_owners`): a simulated driver refuses to destroy it.
SliceUsers = Callable[[int, int], list[str]]


def no_users(_gpu: int, _gi_id: int) -> list[str]:
    return []


@dataclass(frozen=True)
class SimulatedIdentity:
    """What a simulated GPU looks like to tools: stable for a (seed, index, type)."""

    uuid: str
    name: str
    pci_bus_id: str


def simulated_identity(index: int, gpu_type: str, seed: int = 0) -> SimulatedIdentity:
    gt = load_gpu_catalog().get(gpu_type)
    return SimulatedIdentity(
        uuid=f"GPU-{uuid.uuid5(_NAMESPACE, f'gpu:{seed}:{index}:{gpu_type}')}",
        name=gt.product_names[0] if gt.product_names else f"NVIDIA {gpu_type}",
        pci_bus_id=f"00000000:{(0x18 + 0x12 * index) % 256:02X}:00.0",
    )


def expand_gpus(gpus: Sequence[tuple[str, int]] | Sequence[str]) -> list[str]:
    """[("H100-80GB", 2), "A100-40GB"] -> one catalog type per GPU (unknown types: KeyError naming the known)."""
    types: list[str] = []
    for g in gpus:
        name, count = (g, 1) if isinstance(g, str) else g
        load_gpu_catalog().get(name)
        types.extend([name] * count)
    return types


def parse_gpus_spec(spec: str) -> list[tuple[str, int]]:
    """`"H100-80GB:2,A100-40GB"` -> [("H100-80GB", 2), ("A100-40GB", 1)] (types checked)."""
    out: list[tuple[str, int]] = []
    catalog = load_gpu_catalog()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, count = part.partition(":")
        if name not in catalog.gpu_types:
            raise ValueError(f"unknown GPU type {name!r} in {spec!r}; known: {', '.join(catalog.gpu_types)}")
        if count and not (count.isdigit() and int(count) > 0):
            raise ValueError(f"bad GPU count {count!r} in {spec!r}: write TYPE:COUNT, e.g. H100-80GB:2")
        out.append((name, int(count) if count else 1))
    if not out:
        raise ValueError("no GPUs given: write TYPE[:COUNT][,TYPE[:COUNT]…], e.g. H100-80GB:2")
    return out


@dataclass
class _Instance:
    gi_id: int
    profile: str
    profile_id: int
    start: int
    size: int
    uuid: str
    has_ci: bool = True  # the full-size compute instance (`-C`); the MIG device exists only with it


@dataclass
class _Gpu:
    index: int
    gpu_type: str
    uuid: str
    name: str
    pci_bus_id: str
    mig_enabled: bool
    serial: int = 0  # instances ever created: seeds the next MIG UUID
    instances: list[_Instance] = field(default_factory=list)

    def find(self, gi_id: int) -> _Instance | None:
        return next((i for i in self.instances if i.gi_id == gi_id), None)


def _decode_gpus(doc: dict) -> list[_Gpu]:
    # `in_use_by` marks of older state files are dropped: leases replaced them (issue 10)
    return [_Gpu(**{**g, "instances": [_Instance(**{k: v for k, v in i.items() if k != "in_use_by"})
                                        for i in g["instances"]]}) for g in doc.get("gpus", [])]


class SimulatedMigBackend:
    """In-memory MIG GPUs, optionally persisted to `state_file`. Thread- and process-safe.

    `users(gpu, gi_id)` says who runs on a GPU instance now (the node's live leases): like the
    driver with a process on the device, destroying it then fails "In use by another client".
    """

    partitioning = "mig"

    def __init__(self, gpus: Sequence[tuple[str, int]] | Sequence[str] | None = None,
                 state_file: Path | str | None = None, *, seed: int = 0, mig_enabled: bool = True,
                 users: SliceUsers = no_users) -> None:
        self.seed = seed
        self.users = users
        self._state = StateFile(state_file, version=STATE_VERSION, what="simulated MIG state", decode=_decode_gpus,
                                encode=lambda gpus: {"seed": self.seed, "gpus": [asdict(g) for g in gpus]})
        wanted = expand_gpus(gpus) if gpus is not None else None
        with self._txn() as state:
            if state:
                have = [g.gpu_type for g in state]
                if wanted is not None and wanted != have:
                    raise MigError(
                        f"state file {self.state_file} describes GPUs {have} but {wanted} were asked for; "
                        "delete the file or ask for the same GPUs"
                    )
            else:
                state.extend(self._new_gpu(i, t, mig_enabled) for i, t in enumerate(wanted or ["H100-80GB"]))

    @property
    def state_file(self) -> Path | None:
        return self._state.path

    def _new_gpu(self, index: int, gpu_type: str, mig_enabled: bool) -> _Gpu:
        ident = simulated_identity(index, gpu_type, self.seed)
        return _Gpu(index=index, gpu_type=gpu_type, uuid=ident.uuid, name=ident.name, pci_bus_id=ident.pci_bus_id,
                    mig_enabled=mig_enabled)

    def _txn(self) -> AbstractContextManager[list[_Gpu]]:
        """The GPUs in one transaction (re-entrant; see mig/state_file.py)."""
        return self._state.transaction()

    @staticmethod
    def _gpu(gpus: list[_Gpu], index: int) -> _Gpu:
        if not 0 <= index < len(gpus):
            raise MigError(f"GPU {index} not found: this node has GPUs 0-{len(gpus) - 1}")
        return gpus[index]

    @staticmethod
    def _to_instance(gpu: _Gpu, i: _Instance) -> GpuInstance:
        return GpuInstance(gpu_index=gpu.index, gi_id=i.gi_id, profile=i.profile, profile_id=i.profile_id,
                           start=i.start, size=i.size, uuid=i.uuid)

    # ----------------------------------------------------------------- MigBackend
    def list_gpus(self) -> list[GpuInfo]:
        with self._txn() as gpus:
            return [GpuInfo(index=g.index, uuid=g.uuid, name=g.name, gpu_type=g.gpu_type, enabled=g.mig_enabled)
                    for g in gpus]

    def set_mig_mode(self, gpu: int, enabled: bool) -> str:
        """Like `nvidia-smi -i N -mig 0|1`. Disabling drops the (idle) instances, as a reset does."""
        with self._txn() as gpus:
            g = self._gpu(gpus, gpu)
            if not enabled:
                busy = [f"GI {i.gi_id} by {' and '.join(owners)}" for i in g.instances
                        if (owners := self.users(gpu, i.gi_id))]
                if busy:
                    raise InstanceInUseError(
                        f"Unable to disable MIG Mode for GPU {g.pci_bus_id}: In use by another client "
                        f"({', '.join(busy)})"
                    )
                g.instances.clear()
            g.mig_enabled = enabled
            return f"{'Enabled' if enabled else 'Disabled'} MIG Mode for GPU {g.pci_bus_id}\nAll done."

    def list_instances(self, gpu: int) -> list[GpuInstance]:
        with self._txn() as gpus:
            g = self._gpu(gpus, gpu)
            return [self._to_instance(g, i) for i in sorted(g.instances, key=lambda i: i.gi_id)]

    def create_instance(self, gpu: int, profile: str, start: int) -> GpuInstance:
        return self.create_gpu_instance(gpu, profile, start, with_ci=True)

    def destroy_instance(self, gpu: int, gi_id: int) -> None:
        with self._txn():  # one transaction: nobody sees the GI without its CI
            if self._instance(gpu, gi_id, "destroy GPU instance").has_ci:
                self.destroy_compute_instance(gpu, gi_id)
            self.destroy_gpu_instance(gpu, gi_id)

    # ----------------------------------------------------------------- GI / CI level (the fake nvidia-smi)
    def _instance(self, gpu: int, gi_id: int, action: str) -> _Instance:
        with self._txn() as gpus:
            g = self._gpu(gpus, gpu)
            if not g.mig_enabled:
                raise MigDisabledError(f"Unable to {action} ID {gi_id} from GPU {gpu}: "
                                       f"No MIG-enabled devices found (MIG mode is disabled on GPU {gpu})")
            inst = g.find(gi_id)
            if inst is None:
                raise MigError(f"Unable to {action} ID {gi_id} from GPU {gpu}: Not Found "
                               f"(GPU {gpu} has GPU instances {sorted(i.gi_id for i in g.instances)})")
            return inst

    def create_gpu_instance(self, gpu: int, profile: str | int, start: int | None = None,
                            with_ci: bool = True) -> GpuInstance:
        """`-cgi PROFILE[:START] [-C]`; without a start the lowest free one is used."""
        with self._txn() as gpus:
            g = self._gpu(gpus, gpu)
            head = f"Unable to create a GPU instance on GPU {gpu} using profile {profile}"
            if not g.mig_enabled:
                raise MigDisabledError(
                    f"{head}: No MIG-enabled devices found (MIG mode is disabled on GPU {gpu}; "
                    f"enable it with `gpu-node mig enable --gpu {gpu} --yes`)"
                )
            existing = [Placement(i.profile, i.start) for i in g.instances]
            try:
                prof = resolve_profile(g.gpu_type, profile)
                if start is None:
                    start = first_free_start(g.gpu_type, existing, prof.name)
                    if start is None:
                        raise PlacementError(f"no free placement for {prof.name} next to "
                                             f"{', '.join(f'{p.profile}@{p.start}' for p in existing)}")
                check_addition(g.gpu_type, existing, Placement(prof.name, start))
            except UnknownProfileError as exc:
                raise UnknownProfileError(f"{head}: Invalid Argument ({exc})") from None
            except PlacementError as exc:
                raise PlacementError(f"{head}: Insufficient Resources ({exc})") from None
            gt = load_gpu_catalog().get(g.gpu_type)
            gi_id = tree_gi_id(gt.memory_slots, start, prof.size, {i.gi_id for i in g.instances})
            g.serial += 1
            inst = _Instance(gi_id=gi_id, profile=prof.name, profile_id=prof.id, start=start, size=prof.size,
                             uuid=f"MIG-{uuid.uuid5(_NAMESPACE, f'{g.uuid}:{g.serial}')}", has_ci=with_ci)
            g.instances.append(inst)
            return self._to_instance(g, inst)

    def create_compute_instance(self, gpu: int, gi_id: int) -> None:
        """`-cci -gi G`: the full-size compute instance (ID 0) of a GPU instance."""
        with self._txn():
            inst = self._instance(gpu, gi_id, "create compute instance on GPU instance")
            if inst.has_ci:
                raise PlacementError(f"Unable to create a compute instance on GPU {gpu} GPU instance ID {gi_id}: "
                                     "Insufficient Resources (it already has its full-size compute instance)")
            inst.has_ci = True

    def destroy_compute_instance(self, gpu: int, gi_id: int) -> None:
        """`-dci -gi G`: fails while a process uses the instance."""
        with self._txn():
            inst = self._instance(gpu, gi_id, "destroy compute instance of GPU instance")
            if not inst.has_ci:
                raise MigError(f"Unable to destroy compute instance ID 0 from GPU {gpu} GPU instance ID {gi_id}: "
                               "Not Found")
            owners = self.users(gpu, gi_id)
            if owners:
                raise InstanceInUseError(
                    f"Unable to destroy compute instance ID 0 from GPU {gpu} GPU instance ID {gi_id}: "
                    f"In use by another client ({', '.join(owners)} still runs on it; stop it first)"
                )
            inst.has_ci = False

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        """`-dgi -gi G`: fails while the GI still has a compute instance or a user, like the driver."""
        with self._txn() as gpus:
            inst = self._instance(gpu, gi_id, "destroy GPU instance")
            owners = self.users(gpu, gi_id)
            if inst.has_ci or owners:
                user = ", ".join(owners) or "its compute instance"
                raise InstanceInUseError(
                    f"Unable to destroy GPU instance ID {gi_id} from GPU {gpu}: In use by another client "
                    f"({user} still uses it; stop it first)"
                )
            self._gpu(gpus, gpu).instances.remove(inst)

    def has_compute_instance(self, gpu: int, gi_id: int) -> bool:
        return self._instance(gpu, gi_id, "inspect GPU instance").has_ci

    # ----------------------------------------------------------------- simulation hooks
    def gpu_type(self, gpu: int) -> str:
        with self._txn() as gpus:
            return self._gpu(gpus, gpu).gpu_type

    def slice_env(self, gpu: GpuInfo, inst: GpuInstance) -> dict[str, str]:
        """A process on a MIG slice sees only that MIG device."""
        return {"CUDA_VISIBLE_DEVICES": inst.uuid}

    def pci_bus_id(self, gpu: int) -> str:
        with self._txn() as gpus:
            return self._gpu(gpus, gpu).pci_bus_id
