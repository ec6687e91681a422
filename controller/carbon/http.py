"""One JSON-over-HTTP helper for the grid APIs, turning every failure into a clear CarbonSourceError.

Credentials travel in headers or HTTP Basic auth only, never in URLs, so the URLs that appear
in error messages and logs carry no secret.
"""
from __future__ import annotations

from typing import Any

import httpx

from controller.carbon.base import CarbonSourceError


class HttpSourceError(CarbonSourceError):
    """An HTTP-level failure; `status` is the response code (None: no response)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JsonApi:
    def __init__(self, provider: str, base_url: str, *, timeout_s: float = 10.0,
                 credential_hint: str = "", client: httpx.Client | None = None) -> None:
        """`credential_hint` completes "check ..." in 401/403 messages (e.g. the env variable)."""
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.credential_hint = credential_hint
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=True)

    def get(self, path: str, *, params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None) -> Any:
        url = f"{self.base_url}/{path.lstrip('/')}"
        try:
            resp = self._client.get(url, params=params, headers=headers, auth=auth)
        except httpx.TimeoutException:
            raise HttpSourceError(
                f"{self.provider}: no answer from {url} within {self.timeout_s:g} s; check the network or proxy "
                "(--base-url) or try again later") from None
        except httpx.HTTPError as exc:
            raise HttpSourceError(f"{self.provider}: cannot reach {url} ({type(exc).__name__}: {exc}); "
                                  "check the network or --base-url") from None
        status = resp.status_code
        if status in (401, 403):
            raise HttpSourceError(f"{self.provider}: {url} refused the credentials (HTTP {status}); "
                                  f"check {self.credential_hint or 'the credentials'}", status)
        if status == 429:
            raise HttpSourceError(f"{self.provider}: rate limited by {url} (HTTP 429); "
                                  "query less often (min_refresh_s) or upgrade the plan", status)
        if status >= 500:
            raise HttpSourceError(f"{self.provider}: server error at {url} (HTTP {status}); "
                                  "the service is having trouble, try again later", status)
        if status >= 400:
            raise HttpSourceError(f"{self.provider}: {url} answered HTTP {status}: {resp.text[:200]!r}; "
                                  "check the zone/region name", status)
        try:
            return resp.json()
        except ValueError:
            raise HttpSourceError(f"{self.provider}: {url} returned malformed JSON "
                                  f"(starts {resp.text[:60]!r}); the API may have changed", status) from None

    def close(self) -> None:
        self._client.close()


def field(obj: Any, *path: str | int, where: str) -> Any:
    """`obj[path[0]][path[1]]…` or a CarbonSourceError naming the missing piece of the response shape."""
    cur = obj
    for key in path:
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            shown = "".join(f"[{k!r}]" for k in path)
            raise CarbonSourceError(f"{where}: unexpected response shape, no {shown}; the API may have changed") \
                from None
    if cur is None:
        raise CarbonSourceError(f"{where}: {''.join(f'[{k!r}]' for k in path)} is null")
    return cur
