"""WattTime API v3: marginal operating emissions rate (co2_moer) of a grid region.

`GET /login` with HTTP Basic auth returns a bearer token valid 30 minutes; it is renewed
after `token_ttl_s` or when a request answers 401. The current value is the first point of
`/v3/forecast` (the forecast starts at the present five-minute interval). Values come in
lbs CO2/MWh and are converted to g/kWh (× 0.453592). Credentials: arguments (from config) or
WATTTIME_USERNAME / WATTTIME_PASSWORD.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import httpx

from controller.carbon.base import (
    CachedSource,
    CarbonReading,
    CarbonSourceError,
    parse_time,
)
from controller.carbon.http import HttpSourceError, JsonApi, field

DEFAULT_BASE_URL = "https://api.watttime.org"
USER_ENV, PASSWORD_ENV = "WATTTIME_USERNAME", "WATTTIME_PASSWORD"
LBS_PER_MWH_TO_G_PER_KWH = 0.453592
_UNITS = {"lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH, "g_co2_per_kwh": 1.0}


class WattTimeSource(CachedSource):
    def __init__(self, region: str, *, username: str | None = None, password: str | None = None,
                 base_url: str | None = None, timeout_s: float = 10.0, min_refresh_s: float = 300.0,
                 token_ttl_s: float = 25 * 60, clock: Callable[[], float] = time.monotonic,
                 client: httpx.Client | None = None) -> None:
        super().__init__(min_refresh_s, clock)
        if not region:
            raise CarbonSourceError("watttime: give a region, e.g. watttime:CAISO_NORTH")
        self.region = region
        self.name = f"watttime:{region}"
        user, pw = username or os.environ.get(USER_ENV), password or os.environ.get(PASSWORD_ENV)
        if not (user and pw):
            raise CarbonSourceError(f"watttime: no credentials; set {USER_ENV} and {PASSWORD_ENV} "
                                    "(or username/password in the config)")
        self._basic = (user, pw)
        self._token: str | None = None
        self._token_at = float("-inf")
        self._token_ttl_s = token_ttl_s
        self._api = JsonApi("watttime", base_url or DEFAULT_BASE_URL, timeout_s=timeout_s,
                            credential_hint=f"{USER_ENV} / {PASSWORD_ENV}", client=client)

    def _login(self) -> str:
        body = self._api.get("login", auth=self._basic)
        self._token, self._token_at = str(field(body, "token", where="watttime /login")), self._clock()
        return self._token

    def _get(self, path: str, params: dict) -> dict:
        """GET with the bearer token, logging in first or again when it expired or was refused."""
        if self._token is None or self._clock() - self._token_at > self._token_ttl_s:
            self._login()
        try:
            return self._api.get(path, params=params, headers={"Authorization": f"Bearer {self._token}"})
        except HttpSourceError as exc:
            if exc.status != 401:
                raise
        self._login()
        return self._api.get(path, params=params, headers={"Authorization": f"Bearer {self._token}"})

    def _series(self, path: str, params: dict) -> list[CarbonReading]:
        where = f"watttime {path}"
        body = self._get(path, {"region": self.region, "signal_type": "co2_moer", **params})
        units = field(body, "meta", "units", where=where)
        if units not in _UNITS:
            raise CarbonSourceError(f"{where}: unsupported units {units!r} (expected one of {sorted(_UNITS)})")
        try:
            return [CarbonReading(float(field(p, "value", where=where)) * _UNITS[units],
                                  parse_time(field(p, "point_time", where=where)), self.name)
                    for p in field(body, "data", where=where)]
        except (TypeError, ValueError) as exc:
            raise CarbonSourceError(f"{where}: unreadable data point: {exc}") from None

    def _fetch_current(self) -> CarbonReading:
        points = self._series("v3/forecast", {})
        if not points:
            raise CarbonSourceError("watttime v3/forecast: empty data; the region may have no forecast")
        return points[0]

    def _fetch_forecast(self, hours: int) -> list[CarbonReading]:
        points = self._series("v3/forecast", {"horizon_hours": hours})
        end = points[0].timestamp + timedelta(hours=hours) if points else None
        return [p for p in points if end is None or p.timestamp < end]

    def history(self, hours: int = 24) -> list[CarbonReading]:
        """The last `hours` of MOER values from /v3/historical."""
        now = datetime.now(timezone.utc)
        return self._series("v3/historical", {"start": (now - timedelta(hours=hours)).isoformat(),
                                              "end": now.isoformat()})
