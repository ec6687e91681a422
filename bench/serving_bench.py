"""Serving overhead and re-partition time, measured in one run on this machine.

Three paths to the same simulated slice work (a replica that sleeps the service time of
yolo11n on a 7g slice, batch 1):
  clover   HTTP → Serve proxy → Clover ingress (router) → replica application
  handle   Python → replica DeploymentHandle directly (no HTTP, no ingress)
  plain    HTTP → Serve proxy → a plain single-deployment Serve app doing the same sleep
For each: p50/p99 of sequential requests, and throughput with N concurrent clients.
Then: seconds to re-partition one simulated GPU (7g → 4g+3g) make-before-break, end to end
(drain, stop, MIG ops, start and warm the new replicas), and the MIG-op part of it.

    .venv/bin/python -m bench.serving_bench [--requests 200] [--concurrency 32] [--seconds 8]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import httpx


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _http_latencies(url: str, body: bytes, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=30) as c:
        for _ in range(n):
            t = time.perf_counter()
            r = await c.post(url, content=body)
            r.raise_for_status()
            out.append((time.perf_counter() - t) * 1000)
    return out


async def _http_throughput(url: str, body: bytes, clients: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            (await c.post(url, content=body)).raise_for_status()
            done += 1

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as c:
        t = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        return done / (time.perf_counter() - t)


async def _handle_latencies(handle: Any, body: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await handle.remote(body)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def _handle_throughput(handle: Any, body: bytes, clients: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await handle.remote(body)
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return done / (time.perf_counter() - t)


def plain_app(service_s: float) -> Any:
    """The reference: one ordinary Serve deployment doing the same work, straight behind the proxy."""
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.05})
    class Plain:
        def __init__(self) -> None:
            self._gpu = asyncio.Lock()  # one batch at a time, like the slice replica

        async def __call__(self, request: Request) -> dict:
            await request.body()
            async with self._gpu:
                await asyncio.sleep(service_s)
            return {"variant": "plain"}

    return Plain.bind()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)

    from ray import serve
    from rich.console import Console
    from rich.table import Table

    from controller.accounting.runlog import RunLog, read_events
    from controller.carbon.spec import make_source
    from controller.demo import free_port
    from controller.loop.control_loop import ControlLoop, LoopSettings
    from controller.planning.plan import GpuPlan, Plan, SliceAssignment
    from controller.serving.runtime import init_ray, shutdown, start_ingress
    from gpu_node.agent import AgentConfig, start_agent
    from loadgen.payloads import load_payloads
    from mig.types import Placement
    from models.performance import PerformanceModel

    body = load_payloads("image", None, seed=1)[0].body
    service_s = PerformanceModel.default().batch_latency_ms("yolo:yolo11n", "H100-80GB", 7, 1) / 1000.0
    run_dir = Path("runs/bench-serving")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh simulated node and run log every time
    init_ray(local_nodes=("node0",))
    try:
        agent = start_agent(AgentConfig("node0", gpus=2, state_dir=str(run_dir / "node")), detached=False)
        port = free_port()
        ingress = start_ingress("yolo", port=port)
        serve.run(plain_app(service_s), name="plain", route_prefix="/plain")
        # A loose SLA (1 s) makes the router's queue bound large: this measures overhead, not admission control.
        loop = ControlLoop(LoopSettings("yolo", 0.1, 1000.0, 3600, 5.0), runlog=RunLog(run_dir),
                           carbon=make_source("constant:250"), agents={"node0": agent}, ingress=ingress)
        whole = (SliceAssignment(Placement("7g.80gb", 0), "yolo11n", 1, 1.0),)
        one = Plan("yolo", (GpuPlan("node0/gpu0", "H100-80GB", whole), GpuPlan("node0/gpu1", "H100-80GB", ())))
        loop.read_carbon()
        loop.apply(one)
        replica = serve.get_app_handle(next(iter(loop.replicas)))
        url = f"http://127.0.0.1:{port}"
        for warm in (url + "/v1/infer", url + "/plain"):  # first calls set up handles and connections
            asyncio.run(_http_latencies(warm, body, 5))
        rows = []
        for name, lat, thr in (
            ("clover (HTTP→ingress→replica)", _http_latencies(url + "/v1/infer", body, args.requests),
             _http_throughput(url + "/v1/infer", body, args.concurrency, args.seconds)),
            ("replica handle (no HTTP)", _handle_latencies(replica, body, args.requests),
             _handle_throughput(replica, body, args.concurrency, args.seconds)),
            ("plain Serve app (HTTP→deployment)", _http_latencies(url + "/plain", body, args.requests),
             _http_throughput(url + "/plain", body, args.concurrency, args.seconds)),
        ):
            lats = asyncio.run(lat)
            rows.append((name, _pct(lats, 0.5), _pct(lats, 0.99), asyncio.run(thr)))

        # Re-partition GPU 0 (7g → 4g+3g) make-before-break while GPU 1 carries the traffic.
        loop.apply(Plan("yolo", (GpuPlan("node0/gpu0", "H100-80GB", whole), GpuPlan("node0/gpu1", "H100-80GB", whole))))
        split = (SliceAssignment(Placement("4g.40gb", 0), "yolo11n", 1, 0.5),
                 SliceAssignment(Placement("3g.40gb", 4), "yolo11n", 1, 0.5))
        ops_before = len(read_events(run_dir, "mig_op"))
        t = time.perf_counter()
        loop.apply(Plan("yolo", (GpuPlan("node0/gpu0", "H100-80GB", split), GpuPlan("node0/gpu1", "H100-80GB", whole))))
        repart_s = time.perf_counter() - t
        ops = read_events(run_dir, "mig_op")[ops_before:]
        assert len(ops) == 3, f"expected destroy 7g + create 4g, 3g; got {ops}"
        mig_s = sum(e["duration_s"] for e in ops)
    finally:
        shutdown()

    base_p50 = rows[2][1]
    t = Table(title=f"serving overhead (simulated service time {service_s * 1000:.1f} ms, "
                    f"{args.concurrency} clients for throughput)")
    for col in ("path", "p50 ms", "p99 ms", "max req/s", "p50 vs plain"):
        t.add_column(col, justify="right" if col != "path" else "left")
    for name, p50, p99, thr in rows:
        t.add_row(name, f"{p50:.1f}", f"{p99:.1f}", f"{thr:.0f}", f"{p50 / base_p50:.2f}×")
    c = Console()
    c.print(t)
    c.print(f"re-partition one simulated GPU (7g → 4g+3g, make-before-break): {repart_s:.1f} s end to end, "
            f"of which MIG ops {mig_s * 1000:.1f} ms (simulated); the rest is drain + replica stop/start")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
