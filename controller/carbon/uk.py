"""GB grid carbon intensity from api.carbonintensity.org.uk (National Grid ESO; no key).

`uk` is national (`/intensity`: the actual value when published, else the forecast);
`uk:N` is DNO region N (1-17, `/regional/regionid/N`, forecast values only). Half-hourly.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

import httpx

from controller.carbon.base import (
    CachedSource,
    CarbonReading,
    CarbonSourceError,
    parse_time,
)
from controller.carbon.http import JsonApi, field

DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"
REGIONS = {
    1: "North Scotland", 2: "South Scotland", 3: "North West England", 4: "North East England",
    5: "Yorkshire", 6: "North Wales & Merseyside", 7: "South Wales", 8: "West Midlands",
    9: "East Midlands", 10: "East England", 11: "South West England", 12: "South England",
    13: "London", 14: "South East England", 15: "England", 16: "Scotland", 17: "Wales",
}


class UkCarbonIntensitySource(CachedSource):
    def __init__(self, region: str | int | None = None, *, base_url: str | None = None, timeout_s: float = 10.0,
                 min_refresh_s: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 client: httpx.Client | None = None) -> None:
        super().__init__(min_refresh_s, clock)
        self.region: int | None = None
        if region not in (None, ""):
            if not str(region).isdigit() or int(region) not in REGIONS:
                known = ", ".join(f"{k}={v}" for k, v in REGIONS.items())
                raise CarbonSourceError(f"uk: unknown region {region!r}; use uk:N with N one of {known}")
            self.region = int(region)
        self.name = "uk" if self.region is None else f"uk:{self.region}"
        self._api = JsonApi("carbonintensity.org.uk", base_url or DEFAULT_BASE_URL, timeout_s=timeout_s, client=client)

    def _reading(self, period: dict, where: str) -> CarbonReading:
        intensity = field(period, "intensity", where=where)
        value = intensity.get("actual") if isinstance(intensity, dict) else None
        if value is None:
            value = field(intensity, "forecast", where=where)
        try:
            return CarbonReading(float(value), parse_time(field(period, "from", where=where)), self.name)
        except (TypeError, ValueError) as exc:
            raise CarbonSourceError(f"{where}: unreadable period {period!r}: {exc}") from None

    def _periods(self, path: str) -> list[CarbonReading]:
        """National routes list periods in `data`; regional ones nest them in `data[…].data`."""
        where = f"carbonintensity.org.uk {path}"
        data = field(self._api.get(path), "data", where=where)
        if self.region is not None:
            region = data[0] if isinstance(data, list) and data else data
            data = field(region, "data", where=where)
        if not isinstance(data, list) or not data:
            raise CarbonSourceError(f"{where}: no periods in the response")
        return [self._reading(p, where) for p in data]

    def _fetch_current(self) -> CarbonReading:
        return self._periods("intensity" if self.region is None else f"regional/regionid/{self.region}")[0]

    def _fetch_forecast(self, hours: int) -> list[CarbonReading]:
        start = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        path = f"intensity/{start}/fw24h" if self.region is None else \
            f"regional/intensity/{start}/fw24h/regionid/{self.region}"
        return self._periods(path)[: 2 * hours]  # half-hourly periods
