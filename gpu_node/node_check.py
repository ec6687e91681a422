"""What `gpu-node setup` checks before it joins a node to the cluster: driver, GPUs, MIG.

Real nodes are read through NVML (pynvml: driver version, GPU names, MIG capability and mode,
including a *pending* mode change that needs a GPU reset); simulated nodes through the
simulated MIG backend. Read-only: enabling MIG is the separate `gpu-node mig enable` step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

    @property
    def ok(self) -> bool:
        return not self.problems


def assess(report: NodeReport) -> NodeReport:
    """Turn the raw facts into problems and warnings with the action to take (pure)."""
    if not report.gpus:
        report.problems.append("no NVIDIA GPU found on this node")
    for g in report.gpus:
        if not g.mig_capable:
            report.warnings.append(f"GPU {g.index} ({g.name}) does not support MIG; Clover will not use it")
        elif g.mig_pending:
            report.warnings.append(f"GPU {g.index}: MIG mode change is pending; reset the GPU "
                                   f"(nvidia-smi --gpu-reset -i {g.index}) or reboot")
        elif not g.mig_enabled:
            report.warnings.append(f"GPU {g.index}: MIG mode is off; run `gpu-node mig enable --gpu {g.index}` "
                                   "(it may need a GPU reset) before the controller can use it")
    if report.gpus and not any(g.mig_enabled for g in report.gpus):
        report.warnings.append("no GPU has MIG enabled: the node joins, but serves nothing until MIG is on")
    return report


def check_simulated(backend: Any) -> NodeReport:
    gpus = [GpuCheck(g.index, g.name, True, g.mig_enabled) for g in backend.list_gpus()]
    return assess(NodeReport(driver="simulated", simulated=True, gpus=gpus))


def check_nvml(nvml: Any | None = None) -> NodeReport:
    """Read the node through NVML; without a driver the report says so (no exception)."""
    if nvml is None:
        import pynvml as nvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return NodeReport(driver=None, simulated=False,
                          problems=[f"cannot initialise NVML ({exc}): no NVIDIA driver on this node? "
                                    "Install the driver, or use --simulate for a simulated node"])
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
        return assess(NodeReport(driver=str(driver), simulated=False, gpus=gpus))
    finally:
        nvml.nvmlShutdown()


if __name__ == "__main__":  # read-only check of a real node: python -m gpu_node.node_check
    import json
    from dataclasses import asdict

    print(json.dumps(asdict(check_nvml()), indent=2))
