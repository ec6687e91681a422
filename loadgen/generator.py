"""Send open-loop Poisson traffic to `{url}/v1/infer` and measure what comes back.

Each arrival is sent at its scheduled absolute time whatever the server is doing; when
`concurrency` requests are already in flight the arrival is counted as `dropped_client_side`
(the generator is saturated, not the server) instead of being queued, which would silently
lower the offered rate. Every server-side failure is recorded by kind, never raised: a load test
exists to observe those failures.

Each request carries its scheduled send time: its latency is measured from then (so event-loop
lag or a late wake-up counts against the system, wrk2's correction of coordinated omission),
its service time from the moment it was actually sent, and its outcome is booked to the second
it was scheduled in (loadgen/results.py).
"""
from __future__ import annotations

import asyncio
import errno
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from configs.loader import load_services
from loadgen.arrivals import RateTrace, poisson_arrivals
from loadgen.payloads import Payload, load_payloads
from loadgen.results import LoadResult, LoadStats

INFER_PATH = "/v1/infer"
PROGRESS_EVERY_S = 0.25

ProgressCallback = Callable[[float, LoadStats], None]


def _transport_error_kind(exc: BaseException) -> str:
    """`connection_refused` when the cause chain holds ECONNREFUSED (nothing listening), else a coarse kind."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == errno.ECONNREFUSED:
            return "connection_refused"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol_error"
    return "transport_error"


def _variant_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    variant = body.get("variant") if isinstance(body, dict) else None
    return str(variant) if variant is not None else None


@dataclass(frozen=True)
class _Scheduled:
    at: float  # event-loop time the request was due
    second: int  # second of the run it was due in


async def _one_request(client: httpx.AsyncClient, endpoint: str, payload: Payload, timeout_s: float,
                       stats: LoadStats, due: _Scheduled) -> None:
    clock = asyncio.get_running_loop().time
    start = clock()
    try:
        async with asyncio.timeout(timeout_s):  # total deadline; httpx's timeouts are per phase
            response = await client.post(endpoint, content=payload.body, headers={"Content-Type": payload.content_type})
    except (TimeoutError, httpx.TimeoutException):
        stats.record_error(due.second, "timeout", f"no response within {timeout_s:g} s")
        return
    except httpx.RequestError as exc:
        stats.record_error(due.second, _transport_error_kind(exc), f"{type(exc).__name__}: {exc}")
        return
    end = clock()
    if response.is_success:
        stats.record_ok(due.second, (end - due.at) * 1000.0, (end - start) * 1000.0, _variant_of(response))
    else:
        stats.record_error(due.second, f"http_{response.status_code}", f"{payload.source}: {response.text}",
                           retry_after="retry-after" in response.headers)


async def run_load(url: str, service: str, rate: float | RateTrace, duration_s: float,
                   payloads: Sequence[Payload] | None = None, *, concurrency: int = 64, timeout_s: float = 10.0,
                   seed: int | None = None, on_progress: ProgressCallback | None = None) -> LoadResult:
    """Offer Poisson traffic at `rate` (req/s, or a RateTrace) for `duration_s`, wait for the stragglers.

    `payloads=None` sends synthetic ones of the service's input kind (configs/services.yaml).
    `on_progress(elapsed_s, stats)` is called every PROGRESS_EVERY_S while sending (for a progress bar).
    """
    trace = rate if isinstance(rate, RateTrace) else RateTrace.constant(rate)
    if payloads is None:
        payloads = load_payloads(load_services().get(service).input, None, seed)
    if duration_s <= 0 or concurrency < 1 or timeout_s <= 0 or not payloads:
        raise ValueError("run_load needs duration_s > 0, concurrency >= 1, timeout_s > 0 and at least one payload")
    rng = random.Random(seed)
    pick = random.Random(rng.random())
    endpoint = url.rstrip("/") + INFER_PATH
    stats = LoadStats()
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s)) as client:
        t0 = loop.time()

        async def report() -> None:
            while True:
                on_progress(loop.time() - t0, stats)  # type: ignore[misc]
                await asyncio.sleep(PROGRESS_EVERY_S)

        ticker = asyncio.create_task(report()) if on_progress else None
        for offset in poisson_arrivals(trace, duration_s, rng):
            due = _Scheduled(t0 + offset, int(offset))
            await asyncio.sleep(max(due.at - loop.time(), 0.0))  # sleep(0) still lets finished requests free slots
            if stats.in_flight >= concurrency:
                stats.record_drop(due.second)
                continue
            stats.record_send(due.second, lag_s=max(0.0, loop.time() - due.at))
            task = asyncio.create_task(_one_request(client, endpoint, pick.choice(payloads), timeout_s, stats, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        remaining = t0 + duration_s - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
        if ticker:
            ticker.cancel()
            on_progress(elapsed, stats)  # type: ignore[misc]
    return LoadResult.from_stats(stats, url=url, service=service, duration_s=duration_s, elapsed_s=elapsed,
                                 requested_rate_rps=trace.mean_rate(duration_s), concurrency=concurrency,
                                 timeout_s=timeout_s)


def run_load_sync(*args, **kwargs) -> LoadResult:
    """`run_load` for callers without an event loop (the demo, scripts); same arguments."""
    return asyncio.run(run_load(*args, **kwargs))
