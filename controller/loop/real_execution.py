"""`--execution real` made ready for `controller demo` and `controller run`: the device the
replicas run on, the profile the planner predicts with, and the default SLA that profile gives.

Why one module: real execution must plan, judge and account with the machine the replicas
actually run on, never with the bundled simulated-H100 model, and both commands must do it the
same way. On a single machine (the demo; `controller run` on a local cluster) that device is
found here (gpu_node/real_device.py: the GPUs, else this CPU, profiled and cached); its profile
is checked to cover the variants the planner may use and the base variant (the SLA and the
`base` counterfactual are priced from it). On a remote cluster this machine is not where the
replicas run, so `--profile` of the nodes' device describes it instead.

Order matters: a CPU is profiled with the machine to itself, so `prepare_real` runs before Ray
starts.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from controller.loop.settings import LoopSettings, RunDevice

if TYPE_CHECKING:
    from configs.schema import Service
    from gpu_node.real_device import RealDevice
    from models.performance import PerformanceModel
    from models.protocol import PerfModel

LONE_REQUEST_RPS = 1e-6  # a rate at which no request ever waits for another
CLUSTER_METER = "the node agents' (NVML on a GPU, RAPL on a CPU; estimated where unreadable)"


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """`--profile` and `--profile-seconds`, worded alike for every command with `--execution real`."""
    parser.add_argument("--profile", dest="profiles", action="append", default=None, metavar="FILE",
                        help="with --execution real: performance profile of the device the replicas run on "
                             "(repeatable; default: this machine's CPU, profiled at start-up and cached, or its "
                             "GPUs' bundled profiles; with remote nodes give the nodes' device's profile)")
    parser.add_argument("--profile-seconds", type=float, default=None, metavar="S",
                        help="with --execution real on a CPU: seconds timed per variant and batch when "
                             "profiling it (default 1)")


def check_profile_flags(execution: str, profiles: Sequence[str], profile_seconds: float | None) -> None:
    """Refuse profile flags without real execution: a simulated run would silently ignore them."""
    if execution != "real" and (profiles or profile_seconds):
        raise ValueError("--profile and --profile-seconds describe the device of --execution real; add it")


def real_sla_ms(service: Service, gpus: Sequence[tuple[str, str]], perf: PerfModel, rate_rps: float) -> float:
    """The default SLA of a real-execution run, from the profile of the device it runs on: base's p95
    at the expected rate, as Clover defines it — or, where base cannot carry that rate on this
    device at all (b7 on a laptop CPU), its p95 for a request alone (its batch-1 latency)."""
    from controller.planning.model import base_p95_ms

    sla = base_p95_ms(service, gpus, perf, rate_rps)
    return sla if math.isfinite(sla) else base_p95_ms(service, gpus, perf, LONE_REQUEST_RPS)


def covering_model(service: Service, variants: Sequence[str], profiles: Sequence[str],
                   described: str) -> PerformanceModel:
    """The performance model of `profiles`, once checked to have runs of every variant the planner
    may use and of the base variant: without them it could neither plan nor fix the SLA."""
    from models.performance import PerformanceModel

    perf = PerformanceModel.from_profiles(profiles)
    missing = sorted({service.variant(v).profile_key for v in (*variants, service.base.name)} - set(perf.variants()))
    if missing:
        raise ValueError(f"profile {described} has no runs of {', '.join(missing)}: the planner needs the "
                         "variants it may use and the base variant (`gpu-node profile --variants ...`)")
    return perf


def planned_variants(service: Service, settings: LoopSettings) -> tuple[str, ...]:
    return settings.variants or tuple(v.name for v in service.variants)


@dataclass(frozen=True)
class RealExecution:
    """This machine's device for real execution and the SLA its profile gives."""

    device: RealDevice
    sla_ms: float  # base's, under the device's profile (real_sla_ms)

    def settings(self, settings: LoopSettings) -> LoopSettings:
        """`settings` naming the device, profile and meter, with this SLA unless one was given."""
        d = self.device
        sla = settings.sla_ms if settings.sla_ms is not None else self.sla_ms
        return replace(settings, sla_ms=sla, device=RunDevice(d.device, d.profile, d.meter))


def prepare_real(service: Service, settings: LoopSettings, node: str, state_dir: str,
                 profile_files: Sequence[str] = (), profile_seconds: float | None = None, *,
                 echo: bool = True) -> RealExecution:
    """This machine's device as node `node` (profiling a CPU unless a cached profile fits; call it
    before Ray starts) and the SLA of its profile at the settings' expected rate. `echo` says on
    stderr what the wait is for: a first start on a CPU profiles for seconds to minutes."""
    from controller.planning.model import DEFAULT_BATCH_SIZES
    from gpu_node.cpu_profile import PROFILE_SECONDS, CpuProfileRequest
    from gpu_node.real_device import real_device

    if echo:
        print("real execution: finding this machine's device and its profile (a CPU is profiled once, "
              "then cached) ...", file=sys.stderr)
    variants = planned_variants(service, settings)
    req = CpuProfileRequest(service.name, variants, DEFAULT_BATCH_SIZES, settings.threads,
                            profile_seconds or PROFILE_SECONDS)
    device = real_device(node, state_dir, req, profile_files)
    perf = covering_model(service, variants, device.profiles, device.profile)
    return RealExecution(device, real_sla_ms(service, device.gpus, perf, settings.rate_rps))


def cluster_settings(service: Service, settings: LoopSettings, profile_files: Sequence[str]) -> LoopSettings:
    """Real execution on remote nodes: `--profile` of the nodes' device (this machine's says nothing
    about them), checked like this machine's. The SLA, when not given, is fixed by the loop from
    that profile on the GPUs the agents report (controller/loop/control_loop.py)."""
    from gpu_node.real_device import profiled_type

    if not profile_files:
        raise ValueError("--execution real with --address: the replicas run on the cluster's nodes, not this "
                         "machine; give their device's profile with --profile FILE (`gpu-node profile --device "
                         "cpu|cuda --out FILE` on a node)")
    described = f"{', '.join(profile_files)} (given)"
    covering_model(service, planned_variants(service, settings), profile_files, described)
    device = RunDevice(f"{profiled_type(profile_files)} on the cluster's nodes", described, CLUSTER_METER)
    return replace(settings, device=device)
