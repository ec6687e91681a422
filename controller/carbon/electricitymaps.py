"""Electricity Maps API v3: latest, history (last 24 h) and forecast carbon intensity of a zone.

Key: `api_key` argument (from config) or the ELECTRICITYMAPS_API_KEY environment variable,
sent in the `auth-token` header. Data is ODbL: reports made from it carry the attribution.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx

from controller.carbon.base import (
    CachedSource,
    CarbonReading,
    CarbonSourceError,
    parse_time,
)
from controller.carbon.http import JsonApi, field

DEFAULT_BASE_URL = "https://api.electricitymap.org/v3"
KEY_ENV = "ELECTRICITYMAPS_API_KEY"
ATTRIBUTION = ("Contains data from Electricity Maps (https://www.electricitymaps.com), "
               "licensed under the Open Database License (ODbL) v1.0.")


class ElectricityMapsSource(CachedSource):
    def __init__(self, zone: str, *, api_key: str | None = None, base_url: str | None = None,
                 timeout_s: float = 10.0, min_refresh_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, client: httpx.Client | None = None) -> None:
        super().__init__(min_refresh_s, clock)
        if not zone:
            raise CarbonSourceError("electricitymaps: give a zone, e.g. electricitymaps:DE or electricitymaps:US-CAL-CISO")
        self.zone = zone
        self.name = f"electricitymaps:{zone}"
        key = api_key or os.environ.get(KEY_ENV)
        if not key:
            raise CarbonSourceError(f"electricitymaps: no API key; set {KEY_ENV} (or api_key in the config)")
        self._headers = {"auth-token": key}
        self._api = JsonApi("electricitymaps", base_url or DEFAULT_BASE_URL, timeout_s=timeout_s,
                            credential_hint=f"the API key in {KEY_ENV}", client=client)

    def _reading(self, point: dict, where: str) -> CarbonReading:
        value = field(point, "carbonIntensity", where=where)
        try:
            return CarbonReading(float(value), parse_time(field(point, "datetime", where=where)), self.name)
        except (TypeError, ValueError) as exc:
            raise CarbonSourceError(f"{where}: unreadable value in {point!r}: {exc}") from None

    def _points(self, path: str, key: str) -> list[CarbonReading]:
        where = f"electricitymaps {path}"
        body = self._api.get(path, params={"zone": self.zone}, headers=self._headers)
        return [self._reading(p, where) for p in field(body, key, where=where) if p.get("carbonIntensity") is not None]

    def _fetch_current(self) -> CarbonReading:
        path = "carbon-intensity/latest"
        return self._reading(self._api.get(path, params={"zone": self.zone}, headers=self._headers),
                             f"electricitymaps {path}")

    def _fetch_forecast(self, hours: int) -> list[CarbonReading]:
        return self._points("carbon-intensity/forecast", "forecast")[:hours]

    def history(self) -> list[CarbonReading]:
        """The last 24 hourly values (raises CarbonSourceError on failure: nothing to fall back to)."""
        return self._points("carbon-intensity/history", "history")
