"""Send open-loop Poisson traffic to one or several services and measure what comes back.

One service goes to `{url}/v1/infer` (`run_load`, the ingress's path when it serves one
service); several go to `{url}/v1/{service}/infer` at once, each with its own rate or rate trace
and payloads (`run_multi_load_sync`, or `run_loads` with ServiceLoads). Both are `run_loads`.

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
import functools
import heapq
import itertools
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import httpx

from configs.loader import load_services
from loadgen.arrivals import RateTrace, poisson_arrivals
from loadgen.payloads import Payload, load_payloads
from loadgen.results import LoadResult, LoadStats, MultiLoadResult

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


@dataclass(frozen=True)
class ServiceLoad:
    """What to offer one service: when (its rate over time), what (payloads) and where (the path)."""

    service: str
    trace: RateTrace
    payloads: tuple[Payload, ...]
    path: str  # service_path(service), or INFER_PATH for the one-service form

    def __post_init__(self) -> None:
        if not self.payloads:
            raise ValueError(f"no payload to send to {self.service!r}: give at least one")


def service_path(service: str) -> str:
    """The ingress path of one of several served services (`/v1/yolo/infer`)."""
    return f"/v1/{service}/infer"


def as_trace(rate: float | RateTrace) -> RateTrace:
    return rate if isinstance(rate, RateTrace) else RateTrace.constant(rate)


def service_loads(rates: Mapping[str, float | RateTrace], payloads: Mapping[str, Sequence[Payload]] | None = None,
                  seed: int | None = None) -> list[ServiceLoad]:
    """One ServiceLoad per service at its own path; a service without `payloads` gets synthetic
    ones of its input kind (configs/services.yaml)."""
    given = payloads or {}
    stray = sorted(set(given) - set(rates))
    if stray:
        raise ValueError(f"payloads for {', '.join(stray)}, which have no rate; services: {', '.join(rates)}")
    catalog = load_services()
    return [ServiceLoad(name, as_trace(rate),
                        tuple(given[name] if name in given else load_payloads(catalog.get(name).input, None, seed)),
                        service_path(name))
            for name, rate in rates.items()]


@dataclass
class _Sender:
    """One service's side of a run: its arrivals, payload choice, endpoint and counters."""

    load: ServiceLoad
    endpoint: str
    stats: LoadStats
    arrivals_rng: random.Random
    pick: random.Random


def _senders(url: str, loads: Sequence[ServiceLoad], seed: int | None, total: LoadStats) -> list[_Sender]:
    """A seeded, independent random stream per service (seeded by the service's name too, so adding a
    service to a run does not change the others' schedules)."""
    out = []
    for load in loads:
        rng = random.Random(None if seed is None else f"{seed}/{load.service}")
        out.append(_Sender(load, url.rstrip("/") + load.path, LoadStats(parent=total), rng, random.Random(rng.random())))
    return out


def _schedule(senders: Sequence[_Sender], duration_s: float) -> Iterator[tuple[float, int]]:
    """Every service's Poisson arrivals as (offset, sender index), merged in time order."""
    streams = [zip(poisson_arrivals(s.load.trace, duration_s, s.arrivals_rng), itertools.repeat(i))
               for i, s in enumerate(senders)]
    return heapq.merge(*streams)


async def run_loads(url: str, loads: Sequence[ServiceLoad], duration_s: float, *, concurrency: int = 64,
                    timeout_s: float = 10.0, seed: int | None = None,
                    on_progress: ProgressCallback | None = None) -> MultiLoadResult:
    """Offer Poisson traffic to every service in `loads` at once for `duration_s`, wait for the stragglers.

    Each service has its own arrival process and its own `concurrency` bound, so a slow service
    fills only its own slots and never makes another service's arrivals drop client-side.
    `on_progress(elapsed_s, total_stats)` is called every PROGRESS_EVERY_S while sending (for a progress bar).
    """
    names = [load.service for load in loads]
    if duration_s <= 0 or concurrency < 1 or timeout_s <= 0 or not loads or len(set(names)) != len(names):
        raise ValueError("run_loads needs duration_s > 0, concurrency >= 1, timeout_s > 0 and each service once")
    total = LoadStats()
    senders = _senders(url, loads, seed, total)
    tasks: set[asyncio.Task[None]] = set()
    slots = concurrency * len(senders)
    limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s)) as client:
        t0 = loop.time()

        async def report() -> None:
            while True:
                on_progress(loop.time() - t0, total)  # type: ignore[misc]
                await asyncio.sleep(PROGRESS_EVERY_S)

        ticker = asyncio.create_task(report()) if on_progress else None
        for offset, index in _schedule(senders, duration_s):
            sender = senders[index]
            due = _Scheduled(t0 + offset, int(offset))
            await asyncio.sleep(max(due.at - loop.time(), 0.0))  # sleep(0) still lets finished requests free slots
            if sender.stats.in_flight >= concurrency:
                sender.stats.record_drop(due.second)
                continue
            sender.stats.record_send(due.second, lag_s=max(0.0, loop.time() - due.at))
            payload = sender.pick.choice(sender.load.payloads)
            task = asyncio.create_task(_one_request(client, sender.endpoint, payload, timeout_s, sender.stats, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        remaining = t0 + duration_s - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
        if ticker:
            ticker.cancel()
            on_progress(elapsed, total)  # type: ignore[misc]
    result = functools.partial(LoadResult.from_stats, url=url, duration_s=duration_s, elapsed_s=elapsed,
                               timeout_s=timeout_s)
    return MultiLoadResult(
        services={s.load.service: result(s.stats, service=s.load.service, concurrency=concurrency,
                                         requested_rate_rps=s.load.trace.mean_rate(duration_s)) for s in senders},
        total=result(total, service=",".join(names), concurrency=slots,
                     requested_rate_rps=sum(s.load.trace.mean_rate(duration_s) for s in senders)))


async def run_load(url: str, service: str, rate: float | RateTrace, duration_s: float,
                   payloads: Sequence[Payload] | None = None, *, concurrency: int = 64, timeout_s: float = 10.0,
                   seed: int | None = None, on_progress: ProgressCallback | None = None) -> LoadResult:
    """One service at `/v1/infer` (the ingress's one-service path): `run_loads` with a single load.

    `rate` is req/s or a RateTrace; `payloads=None` sends synthetic ones of the service's input kind.
    """
    if payloads is None:
        payloads = load_payloads(load_services().get(service).input, None, seed)
    if not payloads:
        raise ValueError("run_load needs at least one payload")
    load = ServiceLoad(service, as_trace(rate), tuple(payloads), INFER_PATH)
    result = await run_loads(url, [load], duration_s, concurrency=concurrency, timeout_s=timeout_s, seed=seed,
                             on_progress=on_progress)
    return result.services[service]


def run_load_sync(*args, **kwargs) -> LoadResult:
    """`run_load` for callers without an event loop (the demo, scripts); same arguments."""
    return asyncio.run(run_load(*args, **kwargs))


def run_multi_load_sync(url: str, rates: Mapping[str, float | RateTrace], duration_s: float,
                        payloads: Mapping[str, Sequence[Payload]] | None = None, **kwargs) -> MultiLoadResult:
    """Several services at once, each at `/v1/{service}/infer` with its own rate (req/s or RateTrace),
    for callers without an event loop (the demo); `kwargs` as `run_loads`."""
    loads = service_loads(rates, payloads, kwargs.get("seed"))
    return asyncio.run(run_loads(url, loads, duration_s, **kwargs))
