"""The HTTP ingress of a service: FastAPI on Ray Serve, routing to per-slice replica applications.

Endpoints: `POST /v1/infer` (image bytes, or `{"question","context"}` JSON for albert),
`GET /v1/status`, `GET /metrics`, and two state-changing endpoints that need
`Authorization: Bearer $CLOVER_API_TOKEN`: `POST /v1/plan` (force a plan) and `POST /v1/config`
(λ, SLA). Bodies over the size limit get 413; a saturated service gets 503 + Retry-After.

The ingress is ONE Serve replica on purpose: it holds the router state (shares, in-flight
counts, draining flags) that make-before-break depends on. The control loop drives it through
its deployment handle (`add_routes`, `set_shares`, `drain`, `inflight`, `remove_routes`,
`take_interval`, `set_status`, `take_commands`).
"""
import asyncio
import hmac
import time
from collections import Counter
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from controller.serving.router import Router

INGRESS_APP = "clover"
MAX_BODY_BYTES = 10 * 1024 * 1024
RETRY_AFTER_S = 1
# How long a request may wait at the ingress for a replica queue to have room before the
# service counts as saturated (503). Absorbs short stalls (a replica starting on a busy host)
# without letting latency grow without bound.
ADMISSION_WAIT_S = 1.0

app = FastAPI(title="Clover", description="Carbon-aware inference on MIG slices")


class ConfigChange(BaseModel):
    """Body of POST /v1/config."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    lam: float | None = Field(default=None, alias="lambda", ge=0.0, le=1.0)
    sla_ms: float | None = Field(default=None, gt=0.0)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past `limit` bytes (never buffered whole)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@serve.deployment(name="ingress", num_replicas=1, max_ongoing_requests=2048,
                  ray_actor_options={"num_cpus": 0.1})
@serve.ingress(app)
class Ingress:
    def __init__(self, service: str, api_token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.service = service
        self._token = api_token or None  # never logged nor returned
        self._max_body = max_body_bytes
        self.router = Router()
        self._handles: dict[str, Any] = {}
        self._status: dict[str, Any] = {"service": service, "plan": None}
        self._metrics_text = ""
        self._commands: list[dict[str, Any]] = []
        self._run_replica_ms: list[float] = []  # whole run, for the run's p95 against the SLA
        self._reset_interval()

    def _reset_interval(self) -> None:
        self._lat_ms: list[float] = []  # ingress to response: includes the Ray/handle path
        self._replica_ms: list[float] = []  # on the slice: what the SLA bounds
        self._variants: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._t0 = time.time()

    def _handle(self, name: str) -> Any:
        return self._handles[name]

    # -- HTTP ------------------------------------------------------------------------------------
    @app.post("/v1/infer")
    async def infer(self, request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_body:
            return _json_error(413, f"request body of {declared} bytes is over the {self._max_body}-byte limit")
        body = await _read_limited(request, self._max_body)
        if body is None:  # a chunked body has no Content-Length: stopped while streaming
            return _json_error(413, f"request body is over the {self._max_body}-byte limit")
        if not body:
            return _json_error(400, "empty request body: send image bytes (yolo, efficientnet) "
                                    'or {"question": ..., "context": ...} JSON (albert)')
        t0 = time.perf_counter()
        for attempt in range(2):  # one retry on another replica if a replica vanished mid-request
            route = self.router.acquire() or await self._wait_for_room()
            if route is None:
                self._failed["saturated"] += 1
                return _json_error(503, "service saturated: every replica queue is full; retry later",
                                   {"Retry-After": str(RETRY_AFTER_S)})
            try:
                result = await self._handle(route.name).remote(body)
            except Exception as exc:  # noqa: BLE001 - a replica died or was deleted: try another
                if attempt == 1:
                    self._failed["replica"] += 1
                    return _json_error(503, f"replica error: {type(exc).__name__}", {"Retry-After": str(RETRY_AFTER_S)})
                continue
            finally:
                self.router.release(route.name)
            break
        if not result.get("ok"):
            self._failed["bad_request"] += 1
            return _json_error(int(result.get("status", 400)), result.get("error", "bad request"))
        ms = (time.perf_counter() - t0) * 1000.0
        self._lat_ms.append(ms)
        self._replica_ms.append(float(result.get("replica_ms", ms)))
        self._run_replica_ms.append(self._replica_ms[-1])
        self._variants[result["variant"]] += 1
        result.pop("ok", None)
        result["latency_ms"] = ms
        return JSONResponse(result)

    async def _wait_for_room(self) -> Any:
        deadline = time.monotonic() + ADMISSION_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if (route := self.router.acquire()) is not None:
                return route
        return None

    @app.get("/v1/status")
    async def status(self) -> JSONResponse:
        return JSONResponse({**self._status, "replicas": self.router.snapshot()})

    @app.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        return PlainTextResponse(self._metrics_text, media_type="text/plain; version=0.0.4")

    def _authorised(self, request: Request) -> JSONResponse | None:
        if self._token is None:
            return _json_error(403, "state-changing endpoints are disabled: start the controller with "
                                    "CLOVER_API_TOKEN set in its environment")
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), self._token.encode()):
            return _json_error(401, "missing or wrong bearer token (Authorization: Bearer $CLOVER_API_TOKEN)",
                               {"WWW-Authenticate": "Bearer"})
        return None

    async def _json_body(self, request: Request) -> Any:
        body = await _read_limited(request, 1024 * 1024)
        if body is None:
            raise ValueError("body over 1 MiB")
        import json

        return json.loads(body or b"{}")

    @app.post("/v1/config")
    async def config(self, request: Request) -> JSONResponse:
        if (denied := self._authorised(request)) is not None:
            return denied
        try:
            change = ConfigChange.model_validate(await self._json_body(request))
        except (ValueError, ValidationError) as exc:
            return _json_error(422, f'send {{"lambda": 0..1, "sla_ms": > 0}}: {exc}')
        cmd = {"kind": "config", **change.model_dump(exclude_none=True)}
        self._commands.append(cmd)
        return JSONResponse({"accepted": cmd})

    @app.post("/v1/plan")
    async def force_plan(self, request: Request) -> JSONResponse:
        if (denied := self._authorised(request)) is not None:
            return denied
        from controller.planning.plan import Plan

        try:
            doc = await self._json_body(request)
            plan = Plan.from_json(doc)
        except (ValueError, KeyError, TypeError) as exc:
            return _json_error(422, f"body must be a plan as GET /v1/status shows it: {exc!r}")
        if plan.service != self.service:
            return _json_error(422, f"plan is for service {plan.service!r}, this controller serves {self.service!r}")
        from configs import load_services
        from mig.errors import MigError
        from mig.placement import validate_layout

        service = load_services().get(self.service)
        for g in plan.gpus:
            try:
                validate_layout(g.gpu_type, g.layout)
            except (MigError, KeyError) as exc:
                return _json_error(422, f"{g.gpu_id}: invalid MIG layout: {exc}")
            for s in g.slices:
                if s.batch < 1:
                    return _json_error(422, f"{g.gpu_id}: batch must be >= 1, got {s.batch}")
                if s.variant is not None:
                    try:
                        service.variant(s.variant)
                    except KeyError as exc:
                        return _json_error(422, f"{g.gpu_id}: {exc.args[0]}")
        self._commands.append({"kind": "plan", "plan": plan.to_json()})
        return JSONResponse({"accepted": "plan", "applied": "at the next control-loop tick"})

    # -- control plane (called by the control loop through the handle) ---------------------------
    # All async, so Serve runs them on the replica's event loop, between requests: a sync method
    # would run in a thread pool and race the request handlers on the router and the counters
    # (take_interval lost requests that way).
    async def add_routes(self, routes: list[dict[str, Any]]) -> None:
        """Register new replicas (share 0). Their handles are fetched and warmed here, off the
        request path: `get_app_handle` blocks, and a handle's first call sets up its router."""
        for r in routes:
            h = await asyncio.to_thread(serve.get_app_handle, r["name"])
            await h.stats.remote()
            self._handles[r["name"]] = h
            self.router.add(r["name"], r["variant"], int(r["max_queue"]))

    async def set_shares(self, shares: dict[str, float]) -> None:
        self.router.set_shares(shares)

    async def set_bounds(self, bounds: dict[str, int]) -> None:
        self.router.set_bounds(bounds)

    async def drain(self, names: list[str]) -> None:
        for n in names:
            self.router.drain(n)

    async def inflight(self, names: list[str]) -> int:
        return self._inflight(names)

    def _inflight(self, names: list[str]) -> int:
        return sum(self.router.inflight(n) for n in names)

    async def wait_drained(self, names: list[str], timeout_s: float) -> int:
        """Wait until no request is in flight on `names`; returns what is still in flight."""
        deadline = time.monotonic() + timeout_s
        while (left := self._inflight(names)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return left

    async def remove_routes(self, names: list[str]) -> None:
        for n in names:
            self.router.remove(n)
            self._handles.pop(n, None)

    async def routes(self) -> list[dict[str, Any]]:
        return self.router.snapshot()

    async def take_interval(self) -> dict[str, Any]:
        """Requests, failures, per-variant counts and p95 since the previous call."""
        lat = self._lat_ms
        out = {
            "duration_s": time.time() - self._t0,
            "requests": len(lat),
            "failed": sum(self._failed.values()),
            "failed_by_kind": dict(self._failed),
            "variants": dict(self._variants),
            "p95_ms": float(np.percentile(self._replica_ms, 95)) if lat else 0.0,
            "p50_ms": float(np.percentile(self._replica_ms, 50)) if lat else 0.0,
            "ingress_p95_ms": float(np.percentile(lat, 95)) if lat else 0.0,
        }
        self._reset_interval()
        return out

    async def run_p95_ms(self) -> float:
        """p95 over the whole run of the time requests spent on their slice (SLA-bounded)."""
        return float(np.percentile(self._run_replica_ms, 95)) if self._run_replica_ms else 0.0

    async def set_status(self, status: dict[str, Any], metrics_text: str = "") -> None:
        self._status = {"service": self.service, **status}
        self._metrics_text = metrics_text

    async def take_commands(self) -> list[dict[str, Any]]:
        cmds, self._commands = self._commands, []
        return cmds


def ingress_app(service: str, api_token: str | None = None) -> Any:
    return Ingress.bind(service, api_token)
