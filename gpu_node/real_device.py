"""What `--execution real` runs on, described once: the node agent to start, the profiles the
planner predicts with, and how the run's records name the device, the profile and the meter.

Why one description: real execution must plan, judge and account with the machine the replicas
actually run on — its latency profile, its SLA, its energy meter — never with a simulated
GPU's. Without a GPU that machine is this host's CPU (gpu_node/host_cpu.py), profiled at
start-up and cached (gpu_node/cpu_profile.py), metered by RAPL; with one, the node's real GPUs
(nvidia-smi: MIG where MIG mode is on, else MPS shares) with their bundled profiles
(configs/gpus.yaml `bundled_profiles`), metered by NVML. Either way the user may give the profile
files instead (`--profile FILE`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from configs.loader import load_gpu_catalog, profile_paths
from configs.schema import HOST_CPU
from gpu_node.cpu_profile import CpuProfileRequest, cpu_profile, device_name
from gpu_node.devices import AgentConfig


@dataclass(frozen=True)
class RealDevice:
    agent: AgentConfig  # the node to start
    gpu_type: str  # catalog type of its devices
    count: int  # how many
    profiles: tuple[str, ...]  # profile files the planner's performance model is fitted to
    device: str  # "CPU (8 cores, x86_64)", "2× NVIDIA H100 80GB HBM3 (MIG)"
    profile: str  # which profile, and whether it was measured now, reused or given
    meter: str  # "RAPL", "RAPL (estimated: not readable)", "NVML"

    @property
    def gpus(self) -> tuple[tuple[str, str], ...]:
        """(gpu id, type) of the node's devices, as the loop will discover them."""
        return tuple((f"{self.agent.node}/gpu{i}", self.gpu_type) for i in range(self.count))


def profiled_type(files: Sequence[str]) -> str:
    """The catalog type of the device the profile files were measured on (`CPU`, `H100-80GB`)."""
    from models.profile_points import load_points, profile_catalog

    return load_points(files, profile_catalog(files))[0].gpu_type


def given_profiles(files: Sequence[str], gpu_type: str) -> tuple[tuple[str, ...], str]:
    """The user's profile files and their description, once checked to be of this device: profiles
    of another one would plan it with wrong timings."""
    measured = profiled_type(files)
    if measured.removesuffix("-MPS") != gpu_type.removesuffix("-MPS"):  # one board with MIG on or off is one device
        raise ValueError(f"--profile {', '.join(files)}: measured on {measured}, but the replicas run on {gpu_type}; "
                         "give a profile of this device (`gpu-node profile --device cpu|cuda --out FILE`)")
    return tuple(files), f"{', '.join(files)} (given)"


def host_cpu_device(node: str, state_dir: str, req: CpuProfileRequest,
                    profile_files: Sequence[str] = ()) -> RealDevice:
    """This host's CPU: the user's CPU profile, else one measured now (or reused from the cache)."""
    from gpu_node.host_cpu import meter_description

    if profile_files:
        files, described = given_profiles(profile_files, HOST_CPU)
    else:
        measured = cpu_profile(req)
        files, described = (str(measured.path),), measured.describe()
    agent = AgentConfig(node, simulate=False, gpus=1, gpu_type=HOST_CPU, state_dir=state_dir, device="cpu",
                        profile=files[0])
    return RealDevice(agent, HOST_CPU, 1, files, device_name(), described, meter_description())


def bundled_profiles(gpu_type: str) -> tuple[str, ...]:
    prefix = load_gpu_catalog().get(gpu_type).bundled_profiles
    files = tuple(str(p) for p in profile_paths(prefix)) if prefix else ()
    if not files:
        raise ValueError(f"no bundled performance profile for {gpu_type}: measure one on this GPU "
                         "(`gpu-node profile --device cuda --out FILE`) and pass --profile FILE")
    return files


def gpu_device(node: str, state_dir: str, profile_files: Sequence[str] = ()) -> RealDevice:
    """The node's real GPUs: MIG slices where every GPU has MIG mode on, else MPS shares."""
    from mig.backend import make_backend
    from mig.mps import MpsControl

    found = make_backend("nvidia-smi", "mig").list_gpus()
    partition = "mig" if found and all(g.mig_enabled for g in found) else "mps"
    if partition == "mps" and not (status := MpsControl().status()).running:
        raise ValueError(f"the GPUs have MIG mode off, so real execution shares them through MPS: {status.detail}")
    gpus = make_backend("nvidia-smi", partition).list_gpus()
    types = {g.gpu_type for g in gpus}
    if len(types) != 1 or "" in types:
        names = sorted({g.name for g in gpus})
        raise ValueError(f"real execution needs GPUs of one catalogued type; this node has {names} "
                         "(configs/gpus.yaml product_names)")
    gpu_type = types.pop()
    if profile_files:
        files, described = given_profiles(profile_files, gpu_type)
    else:
        files = bundled_profiles(gpu_type)
        described = f"bundled {load_gpu_catalog().get(gpu_type).bundled_profiles}_*.json ({len(files)} files)"
    agent = AgentConfig(node, simulate=False, gpus=len(gpus), gpu_type=gpu_type, state_dir=state_dir,
                        partition=partition)
    return RealDevice(agent, gpu_type, len(gpus), files, f"{len(gpus)}× {gpus[0].name} ({partition.upper()})",
                      described, "NVML")


def gpu_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def real_device(node: str, state_dir: str, req: CpuProfileRequest, profile_files: Sequence[str] = ()) -> RealDevice:
    """The device the replicas of a real-execution run will run on: a GPU when one is visible, else the CPU."""
    if gpu_visible():
        return gpu_device(node, state_dir, profile_files)
    return host_cpu_device(node, state_dir, req, profile_files)
