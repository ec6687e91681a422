"""Planner solve time for 2, 16, 128 and 1024 GPUs (the 1024 of mixed types).

Run: .venv/bin/python bench/planner_bench.py [--service yolo] [--repeats 5]
Prints the median MILP solve time over re-plans at different carbon intensities (the
per-(variant, slice, batch) SLA capacities are computed once per SLA and cached, as in a
running controller; that one-off time is printed separately), plus the model size.
Targets (issue #3): < 100 ms for 2 GPUs, < 1 s for 128, < 10 s for 1024 mixed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from configs.loader import load_services  # noqa: E402
from controller.planning.model import PlanningProblem, base_p95_ms, columns  # noqa: E402
from controller.planning.planner import solve  # noqa: E402
from models.performance import PerformanceModel  # noqa: E402

CLUSTERS = {
    "2x H100": [("H100-80GB", 2)],
    "16x H100": [("H100-80GB", 16)],
    "128x H100": [("H100-80GB", 128)],
    "1024 mixed (512 H100, 256 A100-80, 256 A100-40)": [("H100-80GB", 512), ("A100-80GB", 256), ("A100-40GB", 256)],
}
TARGET_MS = {"2x H100": 100, "16x H100": None, "128x H100": 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--service", default="yolo")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    perf = PerformanceModel.default()
    svc = load_services().get(args.service)
    ref = (("g", "H100-80GB"),)
    rate_per_h100 = 0.5 * perf.throughput_rps(svc.base.profile_key, "H100-80GB", 7, 1)
    sla = base_p95_ms(svc, ref, perf, rate_per_h100)
    table = Table(title=f"planner solve time, {svc.name} ({len(svc.variants)} variants × batch 1,2,4,8), SLA {sla:.1f} ms")
    for c in ("cluster", "GPUs", "rate req/s", "columns", "capacities (once) ms", "solve p50 ms", "solve max ms", "target"):
        table.add_column(c, justify="right")
    for name, spec in CLUSTERS.items():
        gpus = tuple((f"{t}-{i}", t) for t, n in spec for i in range(n))
        rate = 0.5 * sum(perf.throughput_rps(svc.base.profile_key, t, 7, 1) for _, t in gpus)
        problem = PlanningProblem(svc, gpus, perf, rate, sla)
        t0 = time.perf_counter()
        ncols = sum(len(columns(problem, t)) for t in problem.gpu_types)
        cap_ms = (time.perf_counter() - t0) * 1000
        times = []
        for k in range(args.repeats):
            plan = solve(problem.with_(carbon_intensity=50.0 + 150.0 * k))
            times.append(plan.solve_ms)
        target = "< 10000" if "1024" in name else (f"< {TARGET_MS[name]}" if TARGET_MS.get(name) else "")
        table.add_row(name, str(len(gpus)), f"{rate:.0f}", str(ncols), f"{cap_ms:.0f}",
                      f"{statistics.median(times):.1f}", f"{max(times):.1f}", target)
    Console(width=150).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
