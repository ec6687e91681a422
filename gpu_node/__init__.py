"""GPU node: node checks, the node agent that owns MIG changes, simulated devices, meters, profiler."""
