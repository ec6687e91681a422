"""One factory for a node's devices: partition backend, slice leases, energy meters, busy-time recorder.

Why one place: a simulated node and a real one differ only in what is built here — simulated
MIG/MPS state and `SimulatedGpu`s driven by the performance model, nvidia-smi/the MPS control
daemon and NVML, or this host's CPU as one uncut device with RAPL (or energy modelled from its
CPU profile where RAPL is unreadable; gpu_node/host_cpu.py). The node agent receives a
`NodeDevices` and never asks which kind it got. A GPU node also meters its host's CPU package and
DRAM with RAPL (the emissions CSV's cpu_energy/ram_energy); a CPU node does not, since its
device's energy already is that.

Busy time per slice is what per-slice energy attribution needs (controller/accounting). A
replica reports each batch twice, and each recorder keeps the report it can trust:
- `record_batch` at the start of a batch: on a simulated GPU this *is* the execution (the model
  gives its duration and energy); a real GPU ignores it (the batch runs on the device, NVML
  meters it).
- `record_busy` after the batch with the seconds it measured: a real GPU books them; a simulated
  one ignores them (its model already booked the batch, and the replica only slept).
"""
from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from configs.cluster import node_state_dir
from gpu_node.meters.base import Meter
from gpu_node.meters.rapl import DEFAULT_ROOT, RaplMeter
from gpu_node.simulated_gpu import SimulatedGpu
from mig.backend import LEASES_FILE, STATE_FILES, PartitionBackend, make_backend
from mig.leases import LeaseBook
from mig.mps import MpsControl, MpsDaemon, SimulatedDaemon
from mig.types import GpuInfo
from models.protocol import PerfModel

RAPL_ROOT_ENV = "CLOVER_RAPL_ROOT"


@dataclass(frozen=True)
class AgentConfig:
    """How to build a node agent and its devices (also what `gpu-node setup` passes)."""

    node: str
    simulate: bool = True
    gpus: int = 2
    gpu_type: str = "H100-80GB"
    state_dir: str | None = None  # default ~/.clover/<node>: partition state and leases
    mig_op_delay_s: float = 0.0  # extra latency per create/destroy (tests of slow re-partitions)
    partition: str = "mig"  # "mig" (MIG instances) or "mps" (MPS shares)
    # "gpu": the node's GPUs (simulated or real, as `simulate` says); "cpu": this host's CPU, real
    # (`controller demo --execution real` without a GPU; gpu_node/host_cpu.py), whose energy is
    # modelled from `profile` (a CPU profile file) where RAPL cannot be read.
    device: str = "gpu"
    profile: str | None = None
    # powercap tree the host's RAPL counters are read from (a fake one in tests), by both the host
    # meter of a GPU node and a CPU node's device meter; default $CLOVER_RAPL_ROOT, else /sys/class/powercap
    rapl_root: str | None = None

    def __post_init__(self) -> None:
        if self.device not in ("gpu", "cpu"):
            raise ValueError(f"AgentConfig.device must be 'gpu' or 'cpu', got {self.device!r}")
        if self.device == "cpu" and self.simulate:
            raise ValueError("a CPU node is real: build it with simulate=False")

    @property
    def kind(self) -> str:
        """Which devices the node drives: "simulated" GPUs, real ones ("nvidia-smi") or the host "cpu"."""
        if self.device == "cpu":
            return "cpu"
        return "simulated" if self.simulate else "nvidia-smi"

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else node_state_dir(self.node)

    @property
    def rapl_path(self) -> Path:
        return Path(self.rapl_root or os.environ.get(RAPL_ROOT_ENV) or DEFAULT_ROOT)


class BusyRecorder(Protocol):
    """Busy seconds per slice, as replicas report them (see the module docstring)."""

    def record_batch(self, gpu: int, compute_slices: int, variant_key: str, batch: int, slice_id: str) -> float:
        """A batch starts on a slice; returns its modelled duration (0.0 where the device runs it)."""
        ...

    def record_busy(self, gpu: int, slice_id: str, seconds: float) -> None:
        """A batch on a slice finished after `seconds` of measured device time."""
        ...

    def take(self) -> dict[int, dict[str, float]]:
        """Busy seconds per GPU index and slice id since the previous call."""
        ...


class ModelledBusy:
    """Busy time of simulated GPUs: each batch executes on the GPU's `SimulatedGpu`."""

    def __init__(self, devices: Mapping[int, SimulatedGpu]) -> None:
        self._devices = dict(devices)
        self._seen: dict[tuple[int, str], float] = {}  # (gpu, slice) -> busy seconds at the last take
        self._lock = threading.Lock()

    def record_batch(self, gpu: int, compute_slices: int, variant_key: str, batch: int, slice_id: str) -> float:
        dev = self._devices.get(gpu)
        if dev is None:
            return 0.0
        with self._lock:
            self._seen.setdefault((gpu, slice_id), 0.0)
        return float(dev.execute(compute_slices, variant_key, batch, slice_id))

    def record_busy(self, gpu: int, slice_id: str, seconds: float) -> None:
        """Ignored: the batch was already booked by `record_batch` from the model."""

    def take(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = defaultdict(dict)
        with self._lock:
            for (gpu, sid), seen in self._seen.items():
                now = self._devices[gpu].busy_seconds(sid)
                self._seen[(gpu, sid)] = now
                if now > seen:
                    out[gpu][sid] = now - seen
        return dict(out)


class MeasuredBusy:
    """Busy time of real GPUs: the seconds replicas measured around each batch."""

    def __init__(self) -> None:
        self._busy: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._lock = threading.Lock()

    def record_batch(self, gpu: int, compute_slices: int, variant_key: str, batch: int, slice_id: str) -> float:
        return 0.0

    def record_busy(self, gpu: int, slice_id: str, seconds: float) -> None:
        if not seconds >= 0.0:  # also rejects NaN
            raise ValueError(f"busy seconds of {slice_id} on GPU {gpu} must be >= 0, got {seconds!r}")
        with self._lock:
            self._busy[gpu][slice_id] += seconds

    def take(self) -> dict[int, dict[str, float]]:
        with self._lock:
            taken, self._busy = self._busy, defaultdict(lambda: defaultdict(float))
        return {gpu: dict(slices) for gpu, slices in taken.items() if slices}


@dataclass(frozen=True)
class NodeDevices:
    backend: PartitionBackend
    leases: LeaseBook
    meter: Meter  # device keys "gpu<index>", like NVML's
    busy: BusyRecorder
    host_meter: Meter | None = None  # the host's RAPL zones; None where `meter` already is the host CPU


def _simulated_meters(_cfg: AgentConfig, gpus: list[GpuInfo], perf: PerfModel | None) -> tuple[Meter, BusyRecorder]:
    from gpu_node.meters.simulated import SimulatedGpuMeter
    from models.performance import PerformanceModel

    model = perf or PerformanceModel.default()
    devices = {g.index: SimulatedGpu(g.gpu_type, model, uuid=g.uuid) for g in gpus}
    return SimulatedGpuMeter({f"gpu{i}": d for i, d in devices.items()}), ModelledBusy(devices)


def _nvml_meters(_cfg: AgentConfig, gpus: list[GpuInfo], _perf: PerfModel | None) -> tuple[Meter, BusyRecorder]:
    from gpu_node.meters.nvml import NvmlMeter

    return NvmlMeter([g.index for g in gpus]), MeasuredBusy()


def _cpu_meters(cfg: AgentConfig, _gpus: list[GpuInfo], perf: PerfModel | None) -> tuple[Meter, BusyRecorder]:
    from gpu_node.host_cpu import cpu_meters

    def profile_model() -> PerfModel:
        from models.performance import PerformanceModel

        if perf is not None:
            return perf
        if not cfg.profile:
            raise ValueError(f"CPU node {cfg.node}: RAPL is not readable and no CPU profile was given to model "
                             "its energy from; pass AgentConfig(profile=...) (`gpu-node profile --device cpu`)")
        return PerformanceModel.from_profiles([cfg.profile])

    return cpu_meters(profile_model, cfg.rapl_path)


def _gpu_backend(cfg: AgentConfig, leases: LeaseBook) -> PartitionBackend:
    return make_backend(cfg.kind, cfg.partition, state_file=cfg.state_path / STATE_FILES[cfg.partition],
                        gpus=[(cfg.gpu_type, cfg.gpus)], users=leases.live_owners, daemon=mps_daemon(cfg))


def _cpu_backend(cfg: AgentConfig, leases: LeaseBook) -> PartitionBackend:
    from gpu_node.host_cpu import CPU_STATE_FILE, HostCpuBackend

    return HostCpuBackend(cfg.state_path / CPU_STATE_FILE, users=leases.live_owners)


@dataclass(frozen=True)
class _NodeKind:
    backend: Callable[[AgentConfig, LeaseBook], PartitionBackend]
    meters: Callable[[AgentConfig, list[GpuInfo], PerfModel | None], tuple[Meter, BusyRecorder]]


# The only place that tells a simulated node from a real one (`AgentConfig.kind`).
_KINDS = {"simulated": _NodeKind(_gpu_backend, _simulated_meters),
          "nvidia-smi": _NodeKind(_gpu_backend, _nvml_meters),
          "cpu": _NodeKind(_cpu_backend, _cpu_meters)}


def mps_daemon(cfg: AgentConfig) -> MpsDaemon:
    """The node's MPS control daemon: the real one, or a simulated one that always runs."""
    return SimulatedDaemon() if cfg.simulate else MpsControl()


def partition_backend(cfg: AgentConfig, leases: LeaseBook) -> PartitionBackend:
    """The node's partition backend; live leases are the users a simulated driver (and MPS) protects."""
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    return _KINDS[cfg.kind].backend(cfg, leases)


def build_devices(cfg: AgentConfig, *, session: str = "", perf: PerfModel | None = None) -> NodeDevices:
    """Everything a node agent drives, for a simulated or a real node alike.

    `session` is the Ray session name (leases of other sessions are stale); `perf` drives the
    simulated GPUs (default: the model fitted to the bundled profiles) or, on a CPU node whose
    RAPL cannot be read, models its energy (default: the model of `cfg.profile`)."""
    leases = LeaseBook(cfg.state_path / LEASES_FILE, session=session)
    backend = partition_backend(cfg, leases)
    meter, busy = _KINDS[cfg.kind].meters(cfg, backend.list_gpus(), perf)
    host_meter = None if cfg.kind == "cpu" else RaplMeter(cfg.rapl_path)
    return NodeDevices(backend, leases, meter, busy, host_meter)
