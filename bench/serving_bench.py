"""The Clover ingress with 1, 2 and 4 replicas vs a plain single-deployment Serve app, in one run.

    .venv/bin/python -m bench.serving_bench [--quick] [--seconds 10] [--out bench/results/serving_ingress]

Both paths end in the same simulated work per request: decode the JPEG (off the event loop),
then sleep yolo11n's batch-1 service time on a MIG slice (~7.1 ms, the performance model):
  clover   HTTP → Serve proxy → Clover ingress replica (FastAPI + router) → slice replica app
  plain    HTTP → Serve proxy → one Serve deployment doing the decode + sleep, no routing layer
Clover serves from four slice replicas (two simulated H100s, each 4g + 3g, batch 1), ~560
req/s of slice capacity; the plain deployment's sleeps overlap without limit. Neither is
bounded by the (simulated) GPU, so what is measured is the CPU path in front of it.
The stack is started as `controller demo` does (local Ray, a simulated node, bus + ingress,
the control loop built by `build_loop`); the loop deploys one forced plan and is then never
run again, so nothing re-plans while measuring; only the ingress is re-deployed with 2, then
4 replicas. For each ingress count and each of 1/8/32/64 connections the plain app is measured
right before Clover (closed loop, `bench/http_load.py`: wrk if installed), and each Clover
ratio is against that paired plain run, so drift in other load on the machine cancels out.
Writes OUT.md (table), OUT.png (p50/p99/req/s vs connections), OUT.json (raw runs).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.serve import Application

    from controller.planning.plan import Plan
    from controller.serving.control_bus import BusClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_load import run_load, tool_name  # noqa: E402
from bench.proc_cpu import descendants_cpu_s, own_cpu_s  # noqa: E402
from bench.serving_report import Meta, Pair, Run, markdown, plot  # noqa: E402

SERVICE, VARIANT, VARIANT_KEY = "yolo", "yolo11n", "yolo:yolo11n"
GPU_TYPE, GPUS = "H100-80GB", 2
SLICES = (("4g.40gb", 0, 4), ("3g.40gb", 4, 3))  # (profile, start, compute slices) on every GPU
NODE = "bench0"
SLA_MS = 5000.0  # loose: every queue bound is far above 64 requests, so nothing is shed (overhead, not admission)
DECLARED_RPS = 1000.0
CONNECTIONS = (1, 8, 32, 64)  # 1: latency of the path itself, before the CPU saturates
CPU_CONNECTIONS = 32  # the runs whose CPU per request the report breaks down
INGRESS_REPLICAS = (1, 2, 4)
READY_TIMEOUT_S = 120.0


def service_s() -> float:
    """Mean batch-1 service time of the plan's slices: what the plain app sleeps."""
    from models.performance import PerformanceModel

    perf = PerformanceModel.default()
    return statistics.mean(perf.batch_latency_ms(VARIANT_KEY, GPU_TYPE, n, 1) for _, _, n in SLICES) / 1000.0


def plain_app(sleep_s: float) -> Application:
    """The reference: one ordinary Serve deployment behind the proxy doing the slice replica's
    per-request work (decode off the event loop, then the service time) and nothing else."""
    from ray import serve
    from starlette.requests import Request

    from controller.serving.replica import MAX_ONGOING, REPLICA_CPUS

    @serve.deployment(max_ongoing_requests=MAX_ONGOING, ray_actor_options={"num_cpus": REPLICA_CPUS})
    class Plain:
        async def __call__(self, request: Request) -> dict[str, object]:
            from models.preprocess import decode_image

            await asyncio.to_thread(decode_image, await request.body())
            await asyncio.sleep(sleep_s)
            return {"variant": "plain"}

    return Plain.bind()


def the_plan() -> Plan:
    from controller.planning.plan import GpuPlan, Plan, SliceAssignment
    from mig.types import Placement

    share = 1.0 / (GPUS * len(SLICES))
    split = tuple(SliceAssignment(Placement(profile, start), VARIANT, 1, share) for profile, start, _ in SLICES)
    return Plan(SERVICE, tuple(GpuPlan(f"{NODE}/gpu{i}", GPU_TYPE, split) for i in range(GPUS)))


def start_stack(run_dir: Path, port: int) -> tuple[BusClient, ActorHandle]:
    """Ray, a simulated node with two GPUs, bus + one ingress replica, the plain app, and the
    forced plan deployed by the control loop (which is then left idle). Returns the bus client
    and the node agent's handle (keep it: it owns the non-detached agent)."""
    from ray import serve

    from controller.loop.assemble import LoopSpec, build_loop
    from controller.loop.settings import LoopSettings
    from controller.serving.control_bus import PlanCommand
    from controller.serving.runtime import init_ray, start_serving
    from gpu_node.agent import AgentConfig, start_agent
    from gpu_node.free_capacity import slice_units

    node = AgentConfig(NODE, gpus=GPUS, gpu_type=GPU_TYPE, state_dir=str(run_dir / "node-state"))
    init_ray(local_nodes=(NODE,), slice_units=slice_units(node))
    agent = start_agent(node, detached=False)
    bus = start_serving([SERVICE], port=port, ingress_replicas=INGRESS_REPLICAS[0])
    serve.run(plain_app(service_s()), name="plain", route_prefix="/plain")
    # Declared rate above the four replicas' capacity: the controller then spreads traffic in
    # proportion to capacity (at a low rate it fills the most efficient replica first).
    settings = LoopSettings(SERVICE, lam=0.5, sla_ms=SLA_MS, replan_every_s=3600.0, rate_rps=DECLARED_RPS,
                            forecast_hours=0, ingress_replicas=INGRESS_REPLICAS[0])
    loop = build_loop(LoopSpec(settings, "constant:250", 1.0, str(run_dir), echo=False))
    bus.submit(PlanCommand(the_plan()))  # taken by start(): the first plan is this one, not a solve
    loop.start()
    if len(loop.routes.book.specs) != GPUS * len(SLICES):
        raise RuntimeError(f"expected {GPUS * len(SLICES)} slice replicas, the loop runs "
                           f"{sorted(loop.routes.book.specs)}")
    return bus, agent


def scale_ingress(bus: BusClient, port: int, replicas: int) -> None:
    """Re-deploy the ingress with `replicas` and wait until exactly that many report to the bus,
    each routing by the current table (a replaced replica's last report ages out after LIVE_S)."""
    from controller.serving.control_bus import LIVE_S
    from controller.serving.runtime import start_serving

    start_serving([SERVICE], port=port, ingress_replicas=replicas)
    version = bus.table().version
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(LIVE_S + 0.5)
        live = [r for r in bus.reports() if time.time() - r.seen_at < LIVE_S]
        if len(live) == replicas and all(r.table_version == version for r in live):
            return
    raise TimeoutError(f"{replicas} ingress replicas did not all report table {version} in {READY_TIMEOUT_S:.0f}s")


def run(url: str, body: bytes, connections: int, seconds: float) -> Run:
    """One closed-loop run, with the CPU each process role spent per request meanwhile."""
    cpu0, own0 = descendants_cpu_s(), own_cpu_s()
    load = run_load(url, body, "image/jpeg", connections, seconds)
    cpu = descendants_cpu_s() - cpu0
    cpu["load tool"] = own_cpu_s() - own0
    return Run(load, {k: v * 1000.0 / max(1, load.requests) for k, v in cpu.items()})


def measure(bus: BusClient, port: int, body: bytes, seconds: float, warm_s: float) -> list[Pair]:
    base = f"http://127.0.0.1:{port}"
    pairs = []
    for n in INGRESS_REPLICAS:
        if n != INGRESS_REPLICAS[0]:
            scale_ingress(bus, port, n)
        for url in (base + "/plain", base + "/v1/infer"):  # handles and connections warm
            run_load(url, body, "image/jpeg", max(CONNECTIONS), warm_s)
        for c in CONNECTIONS:
            pair = Pair(n, run(base + "/plain", body, c, seconds), run(base + "/v1/infer", body, c, seconds))
            pairs.append(pair)
            k, b = pair.clover.load, pair.plain.load
            print(f"ingress ×{n} c={c:2d}: plain p50 {b.p50_ms:6.1f} ms {b.rps:4.0f} req/s | clover p50 "
                  f"{k.p50_ms:6.1f} ms p99 {k.p99_ms:6.1f} ms {k.rps:4.0f} req/s ({pair.ratio('p50_ms'):.2f}× p50)",
                  flush=True)
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per run (make bench); output under runs/ by default")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per run (default 10, --quick 3)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output path without suffix (default bench/results/serving_ingress, "
                         "--quick runs/bench-serving/serving_ingress)")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    warm_s = 1.0 if args.quick else 3.0
    out = args.out or Path("runs/bench-serving/serving_ingress" if args.quick else "bench/results/serving_ingress")
    if seconds <= 0:
        ap.error(f"--seconds must be > 0, got {seconds}")

    from controller.demo import free_port
    from controller.serving.runtime import shutdown
    from loadgen.payloads import load_payloads

    body = load_payloads("image", None, seed=1)[0].body
    run_dir = Path("runs/bench-serving")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh simulated node and run log every time
    run_dir.mkdir(parents=True)
    load_before, t0 = os.getloadavg()[0], time.perf_counter()
    tool = tool_name()
    print(f"load tool: {tool}", flush=True)
    port = free_port()
    try:
        bus, _agent = start_stack(run_dir, port)  # the handle keeps the (non-detached) agent alive
        pairs = measure(bus, port, body, seconds, warm_s)
    finally:
        shutdown()
    replicas = (f"{GPUS * len(SLICES)} slice replicas ({GPUS} simulated {GPU_TYPE}, each "
                f"{' + '.join(p for p, _, _ in SLICES)})")
    meta = Meta(args.quick, dt.date.today().isoformat(), os.cpu_count() or 1, load_before, os.getloadavg()[0],
                time.perf_counter() - t0, tool, seconds, warm_s, len(body), service_s() * 1000.0, VARIANT, replicas)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = markdown(pairs, meta, CONNECTIONS, CPU_CONNECTIONS)
    out.with_suffix(".md").write_text(report)
    plot(pairs, CONNECTIONS, out.with_suffix(".png"))
    raw = {"meta": meta.to_json(), "runs": [p.to_json() for p in pairs]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(report)
    print(f"wrote {out.with_suffix('.md')}, .png, .json ({meta.wall_s:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
