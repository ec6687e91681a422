"""Closed-loop HTTP load with N connections: wrk when it is installed, else an asyncio/httpx client.

Why wrk first: it is a C event loop, so on a 2-core machine it takes far less CPU from the
server under test than a Python client would, and its latency histogram is exact. The httpx
fallback keeps the bench runnable where wrk is missing (`apt-get install wrk` on Debian); the
output says which tool measured. Both are closed-loop (each connection sends its next request
when the previous answer arrives), so req/s at N connections is the most the server delivers
with N requests outstanding, and the latency percentiles include every completed response.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# wrk runs this script: POST the body from a file and print one JSON line when done.
_WRK_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = assert(io.open({body_path}, "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non2xx": %d, "socket_errors": %d}}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""
TIMEOUT_S = 10


@dataclass(frozen=True)
class LoadResult:
    """One closed-loop run: latency percentiles of completed responses, throughput, failures."""

    connections: int
    seconds: float
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int  # non-2xx answers plus socket errors/timeouts

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def tool_name() -> str:
    """What `run_load` will use, as printed in the bench output."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "closed-loop asyncio/httpx client (wrk not installed)"
    banner = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    return banner[0].split(" Copyright")[0] if banner else "wrk"


def run_load(url: str, body: bytes, content_type: str, connections: int, seconds: float) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is not None:
        return _run_wrk(wrk, url, body, content_type, connections, seconds)
    return asyncio.run(_run_httpx(url, body, content_type, connections, seconds))


def _run_wrk(wrk: str, url: str, body: bytes, content_type: str, connections: int, seconds: float) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        body_path, script = Path(tmp) / "body", Path(tmp) / "post.lua"
        body_path.write_bytes(body)
        script.write_text(_WRK_LUA.format(content_type=content_type, body_path=json.dumps(str(body_path))))
        cmd = [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               f"--timeout={TIMEOUT_S}s", "-s", str(script), url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + TIMEOUT_S + 30, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    r = json.loads(line[len("BENCH "):])
    duration_s = r["duration_us"] / 1e6
    return LoadResult(connections, duration_s, r["requests"], r["p50_us"] / 1000.0, r["p99_us"] / 1000.0,
                      r["requests"] / duration_s, r["non2xx"] + r["socket_errors"])


async def _run_httpx(url: str, body: bytes, content_type: str, connections: int, seconds: float) -> LoadResult:
    import httpx
    import numpy as np

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def connection(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                r = await client.post(url, content=body, headers={"Content-Type": content_type})
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - t) * 1000.0)
            errors += r.status_code >= 300

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(connection(client) for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"), float("nan"))
    return LoadResult(connections, elapsed, len(latencies), float(p50), float(p99), len(latencies) / elapsed, errors)
