"""Energy meters (NVML, RAPL, simulated GPU) behind Zeus-style begin/end windows."""
from gpu_node.meters.base import Measurement, Meter, WindowMeter

__all__ = ["Measurement", "Meter", "WindowMeter"]
