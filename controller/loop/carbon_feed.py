"""The carbon intensity the loop plans with: the current reading and the forecast, logged.

Why apart from the loop: a carbon source may be a remote API that fails or goes stale; this is
the one place that turns a reading into a `carbon` event and the metrics' gauge, and a missing
forecast into a warning (the planner then plans on the current value alone, without pay-back).
"""
from __future__ import annotations

from controller.accounting.metrics import AccountingTotals
from controller.carbon.base import CarbonSource
from controller.loop.ports import EventSink


class CarbonFeed:
    def __init__(self, source: CarbonSource, events: EventSink, totals: AccountingTotals) -> None:
        self.source = source
        self.events = events
        self.totals = totals
        self.now = 0.0  # gCO2/kWh of the last reading

    def read(self) -> float:
        reading = self.source.current()
        self.now = float(reading.value_gco2_per_kwh)
        self.totals.observe_carbon(reading)
        self.events.event("carbon", f"carbon intensity {self.now:.0f} gCO2/kWh", value=self.now,
                          source=reading.source, stale=reading.stale)
        return self.now

    def forecast(self, hours: int) -> tuple[float, ...]:
        try:
            return tuple(r.value_gco2_per_kwh for r in self.source.forecast(hours))
        except Exception as exc:  # noqa: BLE001 - no forecast: plan on the current value alone
            self.events.event("warning", f"no carbon forecast ({exc}); planning without switching cost",
                              where="forecast")
            return ()
