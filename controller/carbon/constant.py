"""A constant carbon intensity (`constant:G`): experiments that must not depend on the grid."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from controller.carbon.base import CarbonReading, CarbonSourceError


class ConstantSource:
    def __init__(self, value_gco2_per_kwh: float) -> None:
        if not value_gco2_per_kwh >= 0:
            raise CarbonSourceError(f"constant: carbon intensity must be >= 0 gCO2/kWh, got {value_gco2_per_kwh}")
        self.value = float(value_gco2_per_kwh)
        self.name = f"constant:{self.value:g}"

    def current(self) -> CarbonReading:
        return CarbonReading(self.value, datetime.now(timezone.utc), self.name)

    def forecast(self, hours: int) -> list[CarbonReading]:
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        return [CarbonReading(self.value, now + timedelta(hours=h), self.name) for h in range(hours)]
