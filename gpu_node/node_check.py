"""What `gpu-node setup` checks before it joins a node to the cluster: driver, GPUs, MIG or MPS.

Real nodes are read through NVML (pynvml: driver version, GPU names, MIG capability and mode,
including a *pending* mode change that needs a GPU reset); simulated nodes through their
partition backend. With `--partition mps` the MPS control daemon must run (else the exact
command that starts it is the problem reported) and MIG must be off. Read-only: enabling MIG
(`gpu-node mig enable`) or starting the daemon are the operator's steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mig.backend import PartitionBackend
from mig.mps import DaemonStatus, MpsDaemon


@dataclass(frozen=True)
class GpuCheck:
    index: int
    name: str
    mig_capable: bool
    mig_enabled: bool
    mig_pending: bool = False  # mode change requested, GPU reset still needed


@dataclass
class NodeReport:
    driver: str | None
    simulated: bool
    gpus: list[GpuCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # fatal: the node cannot serve
    warnings: list[str] = field(default_factory=list)
    partitioning: str = "mig"
    mps_daemon: DaemonStatus | None = None  # checked with --partition mps

    @property
    def ok(self) -> bool:
        return not self.problems


def assess(report: NodeReport) -> NodeReport:
    """Turn the raw facts into problems and warnings with the action to take (pure)."""
    if not report.gpus:
        report.problems.append("no NVIDIA GPU found on this node")
    if report.partitioning == "mps":
        return _assess_mps(report)
    for g in report.gpus:
        if not g.mig_capable:
            report.warnings.append(f"GPU {g.index} ({g.name}) does not support MIG; Clover will not use it "
                                   "(serve it partitioned with --partition mps)")
        elif g.mig_pending:
            report.warnings.append(f"GPU {g.index}: MIG mode change is pending; reset the GPU "
                                   f"(nvidia-smi --gpu-reset -i {g.index}) or reboot")
        elif not g.mig_enabled:
            report.warnings.append(f"GPU {g.index}: MIG mode is off; run `gpu-node mig enable --gpu {g.index}` "
                                   "(it may need a GPU reset) before the controller can use it, or use "
                                   "--partition mps (no reset)")
    if report.gpus and not any(g.mig_enabled for g in report.gpus):
        report.warnings.append("no GPU has MIG enabled: the node joins, but serves nothing until MIG is on")
    return report


def _assess_mps(report: NodeReport) -> NodeReport:
    if report.mps_daemon is not None and not report.mps_daemon.running:
        report.problems.append(report.mps_daemon.detail)
    for g in report.gpus:
        if g.mig_enabled or g.mig_pending:
            report.problems.append(f"GPU {g.index} ({g.name}) has MIG mode on (or pending): MPS shares need the "
                                   f"whole GPU; turn MIG off (`gpu-node mig enable --gpu {g.index} --disable --yes`) "
                                   "or use --partition mig")
    return report


def check_simulated(backend: PartitionBackend, daemon: MpsDaemon | None = None) -> NodeReport:
    """A simulated node as its backend sees it; `daemon` with `--partition mps`."""
    gpus = [GpuCheck(g.index, g.name, g.partitioning == "mig", g.mig_enabled) for g in backend.list_gpus()]
    return assess(NodeReport(driver="simulated", simulated=True, gpus=gpus, partitioning=backend.partitioning,
                             mps_daemon=daemon.status() if daemon else None))


def check_nvml(nvml: Any | None = None, daemon: MpsDaemon | None = None) -> NodeReport:
    """Read the node through NVML; without a driver the report says so (no exception).

    With `daemon` the node is to be partitioned by MPS shares, and the daemon is checked too."""
    if nvml is None:
        import pynvml as nvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return NodeReport(driver=None, simulated=False, partitioning="mps" if daemon else "mig",
                          problems=[(f"cannot initialise NVML ({exc}): no NVIDIA driver on this node? "
                                     "Install the driver, or use --simulate for a simulated node")])
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(h)
            try:
                current, pending = nvml.nvmlDeviceGetMigMode(h)
                gpus.append(GpuCheck(i, str(name), True, bool(current), bool(pending) != bool(current)))
            except nvml.NVMLError:  # NotSupported: not a MIG-capable GPU
                gpus.append(GpuCheck(i, str(name), False, False))
        return assess(NodeReport(driver=str(driver), simulated=False, gpus=gpus,
                                 partitioning="mps" if daemon else "mig",
                                 mps_daemon=daemon.status() if daemon else None))
    finally:
        nvml.nvmlShutdown()


if __name__ == "__main__":  # read-only check of a real node: python -m gpu_node.node_check
    import json
    from dataclasses import asdict

    print(json.dumps(asdict(check_nvml()), indent=2))
