"""MPS shares: the second partitioning backend, for GPUs without MIG (or with MIG off).

CUDA MPS lets a process use only a share of the SMs (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`) and
of device memory (`CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`) while the MPS control daemon runs; the
limits are set per process, in its environment, so nothing on the GPU changes when a layout
does: no reset, no root. A "layout" here is therefore bookkeeping: which shares exist on which
GPU, persisted like the simulated MIG state, placed by the same slot rule as MIG (the catalog's
MPS types have MIG's 1/7…7/7 shapes) so the planner is unchanged. What a replica on a share must
see is `slice_env`: the GPU's UUID, the thread percentage and the memory limit.

Isolation is weaker than MIG's (docs/mps.md): shares run on separate SMs but share the L2
cache and memory bandwidth, and an MPS server fault takes down every client on the GPU.

A share in use (a live lease) cannot be destroyed — the driver would not stop a running
process from using the SMs the share stood for — and a share cannot be created while the
control daemon is down: its process would run unlimited, on the whole GPU.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from configs.loader import load_gpu_catalog
from mig.errors import InstanceInUseError, MigDisabledError, MigError, PlacementError, UnknownProfileError
from mig.placement import check_addition, resolve_profile, tree_gi_id
from mig.simulated import SliceUsers, no_users
from mig.state_file import StateFile
from mig.types import GpuInfo, GpuInstance, Placement

MPS_STATE_VERSION = 1
DEFAULT_PIPE_DIRECTORY = "/tmp/nvidia-mps"  # the daemon's default CUDA_MPS_PIPE_DIRECTORY
START_COMMAND = "nvidia-cuda-mps-control -d"
PID_FILE = "nvidia-cuda-mps-control.pid"  # written by the daemon into its pipe directory


class MpsDaemonError(MigDisabledError):
    """The MPS control daemon is not running, so a share's limits would not apply."""


@dataclass(frozen=True)
class DaemonStatus:
    running: bool
    detail: str  # what was checked, or why it is not running and how to start it


class MpsDaemon(Protocol):
    """The MPS control daemon of this node, as far as Clover needs it."""

    pipe_directory: str | None  # set when clients must be told (a non-default directory)

    def status(self) -> DaemonStatus: ...


def process_alive(pid: int) -> bool:
    """A process exists and is not a zombie (a daemon killed under a parent that never reaps it)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust the signal check
    return state != "Z"


def start_hint(pipe_directory: str | None) -> str:
    prefix = f"CUDA_MPS_PIPE_DIRECTORY={pipe_directory} " if pipe_directory else ""
    return (f"start it with `{prefix}{START_COMMAND}` (as the user the replicas run as; no GPU reset, "
            "no reboot); stop it with `echo quit | nvidia-cuda-mps-control`")


class MpsControl:
    """The real daemon, checked through its PID file and its control pipe.

    Running means: `<pipe dir>/nvidia-cuda-mps-control.pid` names a live process and
    `echo get_server_list | nvidia-cuda-mps-control` answers with exit code 0.
    """

    def __init__(self, binary: str = "nvidia-cuda-mps-control", pipe_directory: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.binary = binary
        self.pipe_directory = pipe_directory or os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or None
        self.timeout_s = timeout_s

    @property
    def _pipe_dir(self) -> Path:
        return Path(self.pipe_directory or DEFAULT_PIPE_DIRECTORY)

    def _down(self, why: str) -> DaemonStatus:
        return DaemonStatus(False, f"MPS control daemon not running ({why}): {start_hint(self.pipe_directory)}")

    def status(self) -> DaemonStatus:
        if shutil.which(self.binary) is None:
            return DaemonStatus(False, f"{self.binary!r} not found on PATH: install the NVIDIA driver's compute "
                                       "utilities (they ship the MPS control daemon)")
        pid_file = self._pipe_dir / PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return self._down(f"no PID in {pid_file}")
        if not process_alive(pid):
            return self._down(f"no live process in {pid_file}")
        env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(self._pipe_dir)}
        try:
            done = subprocess.run([self.binary], input="get_server_list\n", capture_output=True, text=True,
                                  timeout=self.timeout_s, env=env, check=False)
        except subprocess.TimeoutExpired:
            return self._down(f"`get_server_list` got no answer within {self.timeout_s:.0f} s")
        if done.returncode != 0:
            return self._down(f"`get_server_list` failed: {(done.stdout + done.stderr).strip() or done.returncode}")
        return DaemonStatus(True, f"MPS control daemon pid {pid} answers on {self._pipe_dir}")


@dataclass
class SimulatedDaemon:
    """The daemon of a simulated MPS node: running unless a test stops it."""

    running: bool = True
    pipe_directory: str | None = None

    def status(self) -> DaemonStatus:
        if self.running:
            return DaemonStatus(True, "simulated MPS control daemon")
        return DaemonStatus(False, f"simulated MPS control daemon stopped: {start_hint(None)}")


@dataclass
class _Share:
    gi_id: int
    profile: str
    profile_id: int
    start: int
    size: int


@dataclass
class _ShareBook:
    """Shares per GPU, keyed by GPU UUID: indices may change between boots, UUIDs do not."""

    gpus: dict[str, list[_Share]] = field(default_factory=dict)


def _decode(doc: dict) -> _ShareBook:
    return _ShareBook({u: [_Share(**s) for s in shares] for u, shares in doc.get("gpus", {}).items()})


def _encode(book: _ShareBook) -> dict:
    return {"gpus": {u: [asdict(s) for s in shares] for u, shares in sorted(book.gpus.items()) if shares}}


class MpsBackend:
    """Partition backend whose slices are MPS shares (see the module docstring).

    `gpus()` lists the physical GPUs with their MPS catalog types (nvidia-smi on a real node,
    simulated ones otherwise); `daemon` is the MPS control daemon; `users(gpu, gi_id)` are the
    live lease holders of a share.
    """

    partitioning = "mps"

    def __init__(self, gpus: Callable[[], Sequence[GpuInfo]], daemon: MpsDaemon,
                 state_file: Path | str | None = None, *, users: SliceUsers = no_users) -> None:
        self._gpus = gpus
        self.daemon = daemon
        self.users = users
        self._book = StateFile(state_file, version=MPS_STATE_VERSION, what="MPS share", decode=_decode,
                               encode=_encode)

    # ----------------------------------------------------------------- helpers
    def _gpu(self, index: int) -> GpuInfo:
        gpus = self.list_gpus()
        found = next((g for g in gpus if g.index == index), None)
        if found is None:
            raise MigError(f"GPU {index} not found: this node has GPUs {[g.index for g in gpus]}")
        if not found.gpu_type:
            raise MigError(f"GPU {index} ({found.name}) has no MPS entry in configs/gpus.yaml; add one "
                           "(partitioning: mps, memory_gib, total_sms) to partition it")
        return found

    @staticmethod
    def _instance(gpu: GpuInfo, s: _Share) -> GpuInstance:
        return GpuInstance(gpu_index=gpu.index, gi_id=s.gi_id, profile=s.profile, profile_id=s.profile_id,
                           start=s.start, size=s.size, uuid=gpu.uuid)

    # ----------------------------------------------------------------- PartitionBackend
    def list_gpus(self) -> list[GpuInfo]:
        running = self.daemon.status().running
        return [replace(g, enabled=running, partitioning="mps") for g in self._gpus()]

    def list_instances(self, gpu: int) -> list[GpuInstance]:
        g = self._gpu(gpu)
        with self._book.transaction() as book:
            return [self._instance(g, s) for s in sorted(book.gpus.get(g.uuid, []), key=lambda s: s.gi_id)]

    def create_instance(self, gpu: int, profile: str, start: int) -> GpuInstance:
        g = self._gpu(gpu)
        head = f"Unable to create an MPS share on GPU {gpu} using profile {profile}"
        status = self.daemon.status()
        if not status.running:
            raise MpsDaemonError(f"{head}: {status.detail}")
        with self._book.transaction() as book:
            shares = book.gpus.setdefault(g.uuid, [])
            try:
                prof = resolve_profile(g.gpu_type, profile)
                check_addition(g.gpu_type, [Placement(s.profile, s.start) for s in shares], Placement(prof.name, start))
            except UnknownProfileError as exc:
                raise UnknownProfileError(f"{head}: Invalid Argument ({exc})") from None
            except PlacementError as exc:
                raise PlacementError(f"{head}: Insufficient Resources ({exc})") from None
            slots = load_gpu_catalog().get(g.gpu_type).memory_slots
            share = _Share(tree_gi_id(slots, start, prof.size, {s.gi_id for s in shares}), prof.name, prof.id,
                           start, prof.size)
            shares.append(share)
            return self._instance(g, share)

    def destroy_instance(self, gpu: int, gi_id: int) -> None:
        g = self._gpu(gpu)
        with self._book.transaction() as book:
            shares = book.gpus.get(g.uuid, [])
            share = next((s for s in shares if s.gi_id == gi_id), None)
            if share is None:
                raise MigError(f"Unable to destroy MPS share ID {gi_id} from GPU {gpu}: Not Found "
                               f"(GPU {gpu} has shares {sorted(s.gi_id for s in shares)})")
            owners = self.users(gpu, gi_id)
            if owners:
                raise InstanceInUseError(f"Unable to destroy MPS share ID {gi_id} from GPU {gpu}: In use by another "
                                         f"client ({', '.join(owners)} still runs with its limits; stop it first)")
            shares.remove(share)

    def slice_env(self, gpu: GpuInfo, inst: GpuInstance) -> dict[str, str]:
        """The whole GPU by UUID, limited to the share's SMs and memory by MPS (device 0 = that GPU)."""
        gt = load_gpu_catalog().get(gpu.gpu_type)
        prof = gt.profile(inst.profile)
        env = {"CUDA_VISIBLE_DEVICES": gpu.uuid,
               "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(gt.mps_percent(prof)),
               "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={int(prof.memory_gib * 1024)}M"}
        if self.daemon.pipe_directory:
            env["CUDA_MPS_PIPE_DIRECTORY"] = self.daemon.pipe_directory
        return env
