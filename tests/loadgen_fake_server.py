"""A real HTTP server on 127.0.0.1 that answers `POST /v1/infer` and `POST /v1/{service}/infer`
by repeating scripts of actions, as the Clover ingress's paths are laid out.

Used by the load-generator tests: it tallies what it answered, in total (`tally`) and per path
(`tallies[service]`, `tallies[""]` for `/v1/infer`), so the tests can compare the generator's
counts with the server's own, and it tracks how many requests it held at once (to check the
generator's concurrency bound from the other side of the wire). Given `services` (name ->
script), it serves only those at `/v1/{service}/infer` and answers any other name with the
ingress's 404 listing the served ones.
"""
from __future__ import annotations

import io
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


@dataclass(frozen=True)
class Action:
    kind: str  # ok | 503 | 400 | 404 | slow | close
    variant: str = ""
    delay_s: float = 0.0


@dataclass
class Tally:
    answered: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    content_types: Counter[str] = field(default_factory=Counter)
    bad_bodies: list[str] = field(default_factory=list)
    received: int = 0
    concurrent: int = 0
    max_concurrent: int = 0

    def count(self, action: Action, content_type: str, problem: str | None) -> None:
        self.received += 1
        self.content_types[content_type] += 1
        if problem:
            self.bad_bodies.append(problem)
        self.answered[action.kind] += 1
        if action.variant:
            self.variants[action.variant] += 1


def _body_problem(content_type: str, body: bytes) -> str | None:
    """Why the body is not what a Clover ingress accepts (None when it is fine)."""
    if content_type in ("image/jpeg", "image/png"):
        try:
            with Image.open(io.BytesIO(body)) as img:
                fmt = img.format
                img.verify()
        except Exception as exc:  # noqa: BLE001 - any decode failure is a bad payload here
            return f"undecodable image: {exc}"
        return None if {"JPEG": "image/jpeg", "PNG": "image/png"}[fmt] == content_type else f"{fmt} sent as {content_type}"
    if content_type == "application/json":
        try:
            doc = json.loads(body)
        except ValueError as exc:
            return f"bad JSON: {exc}"
        ok = isinstance(doc, dict) and all(isinstance(doc.get(k), str) and doc[k] for k in ("question", "context"))
        return None if ok else f"JSON without question/context: {doc!r}"
    return f"unexpected Content-Type {content_type!r}"


_SERVICE_PATH = re.compile(r"^/v1/([^/]+)/infer$")
DEFAULT_PATH = "/v1/infer"


class FakeInferServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, script: list[Action], services: dict[str, list[Action]] | None = None) -> None:
        self.script = script
        self.services = services
        self.tally = Tally()
        self.tallies: dict[str, Tally] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "FakeInferServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def _script(self, path: str) -> tuple[str, list[Action]]:
        """The tally key of a path and its script (a one-step 404 script for a service not served)."""
        match = _SERVICE_PATH.match(path)
        if path == DEFAULT_PATH or match is None:
            return "", self.script
        name = match.group(1)
        if self.services is None:
            return name, self.script
        return name, self.services.get(name, [Action("404")])

    def next_action(self, path: str, content_type: str, body: bytes) -> Action:
        problem = _body_problem(content_type, body)
        key, script = self._script(path)
        with self.lock:
            per_path = self.tallies.setdefault(key, Tally())
            action = script[per_path.received % len(script)]
            per_path.count(action, content_type, problem)
            t = self.tally
            t.count(action, content_type, problem)
            t.concurrent += 1
            t.max_concurrent = max(t.max_concurrent, t.concurrent)
        return action

    def done(self) -> None:
        with self.lock:
            self.tally.concurrent -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else header and body writes hit Nagle + delayed ACK: +40 ms
    server: FakeInferServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, doc: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        action = self.server.next_action(self.path, self.headers.get("Content-Type", ""), body)
        try:
            time.sleep(action.delay_s)
            if action.kind == "ok":
                self._reply(200, {"variant": action.variant, "result": []})
            elif action.kind == "503":
                self._reply(503, {"error": "saturated"}, {"Retry-After": "1"})
            elif action.kind == "400":
                self._reply(400, {"error": "malformed payload"})
            elif action.kind == "404":
                served = sorted(self.server.services or {})
                self._reply(404, {"error": f"unknown service; served: {served}", "services": served})
            elif action.kind == "close":
                self.close_connection = True
                self.connection.shutdown(2)
            else:  # slow: answer long after the client's deadline
                self._reply(200, {"variant": "late"})
        except OSError:
            pass  # the client gave up (timeout) and closed the socket
        finally:
            self.server.done()
