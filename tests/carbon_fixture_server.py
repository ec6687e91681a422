"""A real HTTP server on 127.0.0.1 that plays the grid APIs from tests/fixtures/carbon.

Routes map a path prefix to a fixture file, and each route can be switched to a failure
(timeout, 401, 429, 500, malformed JSON) while a test runs. Every request is recorded with
its headers so tests can check authentication.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "carbon"


@dataclass
class Route:
    fixture: str
    fail: str | None = None  # None, "timeout", "401", "429", "500", "malformed"
    fail_times: int | None = None  # None: every request fails; n: the next n requests fail


@dataclass
class FixtureServer:
    routes: dict[str, Route]  # path prefix -> route
    delay_s: float = 1.0  # how long a "timeout" route sleeps
    requests: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                route = next((r for p, r in server.routes.items() if path.startswith(p)), None)
                if route is None:
                    return self._send(404, b'{"error": "not found"}')
                kind = route.fail
                if kind and route.fail_times is not None:
                    route.fail_times -= 1
                    if route.fail_times <= 0:
                        route.fail, route.fail_times = None, None
                if kind == "timeout":
                    time.sleep(server.delay_s)
                    return self._send(504, b"{}")
                if kind in ("401", "429", "500"):
                    return self._send(int(kind), b'{"error": "fixture failure"}')
                if kind == "malformed":
                    return self._send(200, b'{"zone": "DE", "carbonIntensity": 30')
                self._send(200, (FIXTURES / route.fixture).read_bytes())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def fail(self, prefix: str, kind: str | None, times: int | None = None) -> None:
        self.routes[prefix].fail, self.routes[prefix].fail_times = kind, times

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r["path"].startswith(prefix))

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())
