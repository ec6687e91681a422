"""The HTTP ingress: FastAPI on Ray Serve, routing each request to a per-slice replica application.

Endpoints: `POST /v1/{service}/infer` (image bytes, or `{"question","context"}` JSON for albert;
`POST /v1/infer` when exactly one service is served), `GET /v1/status`, `GET /metrics`, and two
state-changing endpoints that need `Authorization: Bearer $CLOVER_API_TOKEN`: `POST /v1/plan`
(force a plan) and `POST /v1/config` (λ, SLA). Bodies over the size limit get 413; 503 bodies say
which of three things is true: no route yet, saturated, or the replica failed.

Stateless and replicated (`--ingress-replicas`, default 2): each replica routes by the versioned
routing table it pulls from the control bus (controller/serving/control_bus.py) when it starts —
before Serve sends it traffic — and then every `SYNC_PERIOD_S`, reporting its cumulative
counters and the version it routes by in the same call. Nothing the system needs lives only here:
a killed ingress replica is replaced by Serve and routes correctly as soon as it is up.
Latency is measured from the moment the request reached this handler, so the logged figures are
what clients see minus the proxy hop.

(No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at runtime.)
Over 300 lines because a Serve FastAPI ingress is one class holding every endpoint; the routing
decision itself is the pure controller/serving/router.py.
"""

import asyncio
import hmac
import json
import logging
import time
from typing import Annotated

from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from controller.accounting.metrics import CONTENT_TYPE, render_metrics
from controller.serving.control_bus import SYNC_PERIOD_S, ConfigCommand, JsonDoc, PlanCommand, bus_handle
from controller.serving.counters import ServingCounters
from controller.serving.router import Route, Router, RoutingTable

log = logging.getLogger(__name__)

INGRESS_APP = "clover"
MAX_BODY_BYTES = 10 * 1024 * 1024
RETRY_AFTER_S = 1
# How long a request may wait at the ingress for a replica queue to have room before the
# service counts as saturated (503). Absorbs short stalls (a replica starting on a busy host)
# while keeping the worst latency of an admitted request well under a second.
ADMISSION_WAIT_S = 0.5
# Requests the proxy queues for all ingress replicas together before it answers 503 itself:
# the bound on the queue in front of the ingress.
MAX_QUEUED_AT_PROXY = 512
BUS_CALL_TIMEOUT_S = 2.0

app = FastAPI(title="Clover", description="Carbon-aware inference on MIG slices")


class ConfigChange(BaseModel):
    """Body of POST /v1/config."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    lam: float | None = Field(default=None, alias="lambda", ge=0.0, le=1.0)
    sla_ms: float | None = Field(default=None, gt=0.0)
    service: str | None = None


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past `limit` bytes (never buffered whole)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _unavailable(kind: str, message: str) -> JSONResponse:
    return _json_error(503, message, {"Retry-After": str(RETRY_AFTER_S)}, kind=kind)


class ReplicaLostError(RuntimeError):
    """The replica serving a request stopped being routable before it answered."""


async def _result(response: DeploymentResponse) -> dict:
    return await response


# Helpers the deployment uses are defined above it: Serve ships the class by value, with the
# module globals that exist when it is decorated.
@serve.deployment(name="ingress", num_replicas=2, max_ongoing_requests=512, max_queued_requests=MAX_QUEUED_AT_PROXY,
                  backpressure_config=BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_S),
                  health_check_period_s=2.0, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(app)
class Ingress:
    async def __init__(self, services: list[str], api_token: str | None = None,
                       max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.services = tuple(services)
        self._token = api_token or None  # never logged nor returned
        self._max_body = max_body_bytes
        self._id = f"ingress-{serve.get_replica_context().replica_id.unique_id}"  # as in its actor name
        self._bus = bus_handle()
        self._routers: dict[str, Router] = {s: Router() for s in self.services}
        self._handles: dict[str, DeploymentHandle] = {}
        self._lost: dict[str, asyncio.Event] = {}  # set when a routed replica leaves the table
        self._table: RoutingTable | None = None
        self._counters = ServingCounters()
        await self._sync()  # route before Serve marks this replica ready
        self._syncer = asyncio.get_running_loop().create_task(self._sync_forever())

    # -- the routing table ---------------------------------------------------------------------
    async def _sync(self) -> None:
        """Report counters; adopt a new table if the bus has one. A bus that does not answer
        (restarting) leaves the current table in force."""
        have = self._table.version if self._table else None
        try:
            table, peers = await asyncio.wait_for(self._bus.sync.remote(self._id, have, self._counters),
                                                  BUS_CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - keep routing by the last table
            log.warning("control bus did not answer (%s); routing by table %s", type(exc).__name__, have)
            return
        if table is not None:
            await self._adopt(table)
        for router in self._routers.values():
            router.set_peers(peers)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_PERIOD_S)
            await self._sync()

    async def _adopt(self, table: RoutingTable) -> None:
        """Route by `table`. New replicas' handles are fetched and warmed here, off the request path
        (`get_app_handle` blocks, and a handle's first call sets up its own router)."""
        usable = []
        for e in table.entries:
            if e.name not in self._handles:
                try:
                    h = await asyncio.to_thread(serve.get_app_handle, e.name)
                    await asyncio.wait_for(h.stats.remote(), BUS_CALL_TIMEOUT_S * 5)
                except Exception as exc:  # noqa: BLE001 - not up (yet) or deleted: not routable now
                    log.info("replica %s not routable yet: %s", e.name, exc)
                    continue
                self._handles[e.name] = h
            usable.append(e)
        for service in {*self.services, *table.services()}:
            self._routers.setdefault(service, Router()).sync(e for e in usable if e.service == service)
        names = {e.name for e in usable}
        for gone in set(self._handles) - names:  # the replica stopped serving (crashed, restarting)
            self._lost.pop(gone, asyncio.Event()).set()  # its waiting requests go elsewhere now
        self._handles = {n: h for n, h in self._handles.items() if n in names}
        complete = len(usable) == len(table.entries)
        self._table = table if complete else RoutingTable(-1, tuple(usable))  # retry the rest next sync

    # -- HTTP ------------------------------------------------------------------------------------
    def _served(self) -> list[str]:
        return sorted(self._routers)

    @app.post("/v1/infer")
    async def infer_default(self, request: Request) -> JSONResponse:
        served = self._served()
        if len(served) != 1:
            return _json_error(404, f"several services are served: POST /v1/{{service}}/infer with one of {served}",
                               services=served)
        return await self._infer(served[0], request, time.perf_counter())

    @app.post("/v1/{service}/infer")
    async def infer(self, service: Annotated[str, Path()], request: Request) -> JSONResponse:
        return await self._infer(service, request, time.perf_counter())

    async def _infer(self, service: str, request: Request, t0: float) -> JSONResponse:
        router = self._routers.get(service)
        if router is None:
            return _json_error(404, f"unknown service {service!r}; served: {self._served()}", services=self._served())
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_body:
            return _json_error(413, f"request body of {declared} bytes is over the {self._max_body}-byte limit")
        body = await _read_limited(request, self._max_body)
        if body is None:  # a chunked body has no Content-Length: stopped while streaming
            return _json_error(413, f"request body is over the {self._max_body}-byte limit")
        if not body:
            return _json_error(400, "empty request body: send image bytes (yolo, efficientnet) "
                                    'or {"question": ..., "context": ...} JSON (albert)')
        self._counters.inflight[service] += 1
        try:
            return await self._route(service, router, body, t0)
        finally:
            self._counters.inflight[service] -= 1

    async def _route(self, service: str, router: Router, body: bytes, t0: float) -> JSONResponse:
        if not router.has_routes():
            self._counters.record_failed(service, "no_route")
            return _unavailable("no_route", f"no route yet: no replica of {service!r} is serving "
                                            "(the controller is starting or re-planning); retry later")
        for attempt in range(2):  # one retry on another replica if a replica vanished mid-request
            route = router.acquire(time.monotonic()) or await self._wait_for_room(router)
            if route is None:
                self._counters.record_failed(service, "saturated")
                return _unavailable("saturated", f"service {service!r} saturated: every replica queue is full; "
                                                 "retry later")
            sent = time.perf_counter()
            try:
                result = await self._call(route.name, body)
            except Exception as exc:  # noqa: BLE001 - a replica died or was deleted: try another
                log.warning("replica %s failed a request (%s: %s); trying another", route.name, type(exc).__name__, exc)
                router.eject(route.name, time.monotonic())
                if attempt == 1:
                    self._counters.record_failed(service, "replica")
                    return _unavailable("replica", f"replica failed: {type(exc).__name__}")
                continue
            finally:
                router.release(route.name)
            break
        if not result.get("ok"):
            self._counters.record_failed(service, "bad_request")
            return _json_error(int(result.get("status", 400)), result.get("error", "bad request"))
        now = time.perf_counter()
        latency_s = now - t0
        router.observe(route.name, float(result.get("replica_ms", 0.0)) / 1000.0, now - sent, time.monotonic())
        self._counters.record_ok(service, result["variant"], route.name, latency_s,
                                 float(result.get("replica_ms", latency_s * 1000.0)) / 1000.0)
        result.pop("ok", None)
        result["latency_ms"] = latency_s * 1000.0
        return JSONResponse(result)

    async def _call(self, name: str, body: bytes) -> dict:
        """One call to a slice replica. If the replica leaves the routing table meanwhile (its
        process died: Serve would hold the request until a new one is up, many seconds), the call
        is cancelled and raises, so the request is retried on another replica at once."""
        lost = self._lost.setdefault(name, asyncio.Event())
        response = self._handles[name].remote(body)
        call = asyncio.ensure_future(_result(response))
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not call.done():
            response.cancel()
            call.cancel()
            raise ReplicaLostError(f"replica {name} left the routing table")
        return call.result()

    async def _wait_for_room(self, router: Router) -> Route | None:
        deadline = time.monotonic() + ADMISSION_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if (route := router.acquire(time.monotonic())) is not None:
                return route
        return None

    @app.get("/v1/status")
    async def status(self) -> JSONResponse:
        try:
            doc: JsonDoc = await asyncio.wait_for(self._bus.status.remote(), BUS_CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the routing view below is still true
            doc = {"error": f"control bus unavailable: {type(exc).__name__}"}
        replicas = [r for s in self._served() for r in self._routers[s].snapshot(time.monotonic())]
        return JSONResponse({**doc, "replicas": replicas,
                             "ingress": {"id": self._id, "routing_version": self._table.version if self._table else None}})

    @app.get("/metrics")
    async def metrics(self) -> Response:
        """Live: counters every ingress replica reported within the last sync period, plus the
        loop's accounting as of its last reconcile tick."""
        serving, accounting = await asyncio.wait_for(self._bus.metrics_inputs.remote(), BUS_CALL_TIMEOUT_S)
        return Response(render_metrics(serving, accounting), media_type=CONTENT_TYPE)

    def _authorised(self, request: Request) -> JSONResponse | None:
        if self._token is None:
            return _json_error(403, "state-changing endpoints are disabled: start the controller with "
                                    "CLOVER_API_TOKEN set in its environment")
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), self._token.encode()):
            return _json_error(401, "missing or wrong bearer token (Authorization: Bearer $CLOVER_API_TOKEN)",
                               {"WWW-Authenticate": "Bearer"})
        return None

    async def _json_body(self, request: Request) -> object:
        body = await _read_limited(request, 1024 * 1024)
        if body is None:
            raise ValueError("body over 1 MiB")
        return json.loads(body or b"{}")

    @app.post("/v1/config")
    async def config(self, request: Request) -> JSONResponse:
        if (denied := self._authorised(request)) is not None:
            return denied
        try:
            change = ConfigChange.model_validate(await self._json_body(request))
        except (ValueError, ValidationError) as exc:
            return _json_error(422, f'send {{"lambda": 0..1, "sla_ms": > 0, "service": optional}}: {exc}')
        if change.service is not None and change.service not in self._routers:
            return _json_error(404, f"unknown service {change.service!r}; served: {self._served()}")
        cmd = ConfigCommand(change.lam, change.sla_ms, change.service)
        await self._bus.submit.remote(cmd)
        return JSONResponse({"accepted": change.model_dump(exclude_none=True, by_alias=True)})

    @app.post("/v1/plan")
    async def force_plan(self, request: Request) -> JSONResponse:
        if (denied := self._authorised(request)) is not None:
            return denied
        from controller.planning.validation import PlanError, validate_plan

        try:
            plan = validate_plan(await self._json_body(request), self.services)
        except (ValueError, PlanError) as exc:
            return _json_error(422, str(exc))
        await self._bus.submit.remote(PlanCommand(plan))
        return JSONResponse({"accepted": "plan", "applied": "by the controller within a second"})


def ingress_app(services: list[str], api_token: str | None = None, replicas: int = 2) -> serve.Application:
    return Ingress.options(num_replicas=max(1, replicas)).bind(list(services), api_token)
