"""GPU check for issue #5: NVML energy counter vs integrated power samples on a real GPU.

Runs ~30 s of fp16 matmul inference load on one GPU while two NvmlMeter instances measure
the same window: one reads nvmlDeviceGetTotalEnergyConsumption, the other integrates
nvmlDeviceGetPowerUsage sampled every 50 ms. Prints both, the relative difference (target
<= 2 %) and an idle window for reference; `--out FILE` also writes the numbers as JSON.
Read-only: it changes no GPU setting (no MIG, clocks or power limit).

    python bench/gpu_energy_check.py --seconds 30 --out /tmp/energy_check.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_node.meters.nvml import NvmlMeter  # noqa: E402


def measure(seconds: float, gpu: int, load: bool) -> dict:
    import torch

    counter = NvmlMeter([gpu], prefer="counter", sample_interval_s=0.05)
    power = NvmlMeter([gpu], prefer="power", sample_interval_s=0.05)
    if not counter.available:
        raise SystemExit(f"NVML unavailable: {counter.unavailable_reason}")
    dev = f"gpu{gpu}"
    if counter.method(dev) != "counter":
        raise SystemExit(f"{dev} has no energy counter (pre-Volta?); nothing to compare")
    x = torch.randn(8192, 8192, device=f"cuda:{gpu}", dtype=torch.float16)
    y = torch.randn(8192, 8192, device=f"cuda:{gpu}", dtype=torch.float16)
    torch.cuda.synchronize()
    iters = 0

    def run_for(s: float) -> None:
        nonlocal x, iters
        t_end = time.monotonic() + s
        while time.monotonic() < t_end:
            if load:
                for _ in range(10):
                    x = (x @ y) * 1e-4
                torch.cuda.synchronize()
                iters += 10
            else:
                time.sleep(0.05)

    # NVML power on H100 is a 1 s average: reach steady power before the window opens.
    run_for(3.0)
    iters = 0
    try:
        power.begin_window("w")
        counter.begin_window("w")
        run_for(seconds)
        c = counter.end_window("w")
        p = power.end_window("w")
    finally:
        counter.close()
        power.close()
    ec, ep = c.energy_j[dev], p.energy_j[dev]
    return {"load": load, "seconds": c.duration_s, "matmuls": iters,
            "counter_j": ec, "integrated_j": ep, "counter_avg_w": ec / c.duration_s,
            "integrated_avg_w": ep / p.duration_s, "rel_diff_pct": 100.0 * (ep - ec) / ec,
            "estimated": c.estimated or p.estimated, "notes": list(c.notes + p.notes)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the loaded window (30)")
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="length of the idle reference window (5; 0 skips)")
    ap.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU (0)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    import pynvml
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
    name = pynvml.nvmlDeviceGetName(h)
    driver = pynvml.nvmlSystemGetDriverVersion()
    pynvml.nvmlShutdown()

    runs = []
    if args.idle_seconds > 0:
        runs.append(measure(args.idle_seconds, args.gpu, load=False))
    runs.append(measure(args.seconds, args.gpu, load=True))
    print(f"device: {name} (driver {driver}), GPU {args.gpu}")
    print(f"{'window':<8}{'s':>7}{'counter J':>12}{'integr. J':>12}{'counter W':>11}{'integr. W':>11}{'diff %':>9}")
    for r in runs:
        print(f"{'load' if r['load'] else 'idle':<8}{r['seconds']:>7.2f}{r['counter_j']:>12.1f}{r['integrated_j']:>12.1f}"
              f"{r['counter_avg_w']:>11.1f}{r['integrated_avg_w']:>11.1f}{r['rel_diff_pct']:>9.2f}")
    loaded = runs[-1]
    ok = abs(loaded["rel_diff_pct"]) <= 2.0
    print(f"loaded window: |diff| = {abs(loaded['rel_diff_pct']):.2f} % -> {'PASS' if ok else 'FAIL'} (target <= 2 %)")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "driver": driver, "gpu": args.gpu, "runs": runs,
                                        "pass": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
