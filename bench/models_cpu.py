"""CPU latency and throughput of every model variant on this machine (batch 1 and 4).

    .venv/bin/python bench/models_cpu.py [--services yolo,efficientnet,albert] [--variants yolo11n,b0]
        [--batches 1,4] [--duration 2] [--threads N]

Uses the profiler's own timing loop (gpu_node.profiler.time_batch) on a ModelRunner with
random weights, so the numbers are those `gpu-node profile --device cpu` would write. The
last column is the batching gain measured in the same run: items/s at the largest batch over
items/s at batch 1. Results for this repository's machine are quoted in docs/models.md.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import time

from rich.console import Console
from rich.table import Table

from gpu_node.profiler import EnergyMeters, ProfileRequest, time_batch
from models.registry import SERVICE_FAMILY, service_specs
from models.runner import ModelRunner, available_cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", default=",".join(SERVICE_FAMILY))
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--duration", type=float, default=2.0, help="timed seconds per variant and batch")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    wanted = set(args.variants.split(",")) if args.variants else None
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    req = ProfileRequest("", batches=tuple(batches), duration_s=args.duration, warmup_s=0.0, min_iters=2)

    table = Table(title=f"CPU inference, fp32, random weights — {platform.processor() or platform.machine()}, "
                        f"{args.threads or available_cpus()} threads")
    table.add_column("variant")
    table.add_column("params M", justify="right")
    for b in batches:
        table.add_column(f"b{b} p50 ms", justify="right")
        table.add_column(f"b{b} items/s", justify="right")
    table.add_column(f"b{batches[-1]}/b{batches[0]} items/s", justify="right", style="bold")
    no_meter = EnergyMeters(None)  # CPU energy is not part of this table (RAPL rarely readable in containers)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    for service in args.services.split(","):
        for spec in service_specs(service):
            if wanted and spec.name not in wanted:
                continue
            runner = ModelRunner(service, spec.name, threads=args.threads)
            runs = []
            for b in batches:
                runs.append(time_batch(runner, b, req, meters=no_meter))
                console.log(f"{spec.profile_key} batch {b}: p50 {runs[-1]['lat_ms_p50']:.1f} ms")
            cells = [spec.profile_key, f"{runner.built.params / 1e6:.1f}"]
            for run in runs:
                cells += [f"{run['lat_ms_p50']:.1f}", f"{run['items_per_s']:.2f}"]
            cells.append(f"{runs[-1]['items_per_s'] / runs[0]['items_per_s']:.2f}")
            table.add_row(*cells)
            del runner
            gc.collect()
    console.print(table)
    console.print(f"total {time.perf_counter() - start:.0f} s; 1-min load average {load_before:.1f} at start, "
                  f"{os.getloadavg()[0]:.1f} at end on {available_cpus()} CPUs (other work inflates and scatters times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
