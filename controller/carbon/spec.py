"""`make_source(spec)`: the one place that turns a source spec string into a provider.

Specs: `trace:NAME_OR_PATH`, `constant:G`, `electricitymaps:ZONE`, `watttime:REGION`,
`uk` or `uk:REGION`. `base_url` points an HTTP provider at a proxy or a test server; other
keyword options go to the provider that understands them (api_key, username, password,
timeout_s, min_refresh_s, time_scale, start_offset_h, clock); options meant for another
kind are ignored so that one config block can serve any spec.
"""
from __future__ import annotations

import inspect
from typing import Any

from controller.carbon.base import CarbonSource, CarbonSourceError
from controller.carbon.constant import ConstantSource
from controller.carbon.electricitymaps import ElectricityMapsSource
from controller.carbon.trace_source import TraceSource
from controller.carbon.uk import UkCarbonIntensitySource
from controller.carbon.watttime import WattTimeSource

FORMS = "trace:NAME_OR_PATH, constant:G, electricitymaps:ZONE, watttime:REGION, uk or uk:REGION"
_KINDS = {"trace": TraceSource, "electricitymaps": ElectricityMapsSource, "watttime": WattTimeSource,
          "uk": UkCarbonIntensitySource}
_HTTP = ("electricitymaps", "watttime", "uk")


def make_source(spec: str, base_url: str | None = None, **opts: Any) -> CarbonSource:
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "constant":
        try:
            return ConstantSource(float(arg))
        except ValueError:
            raise CarbonSourceError(f"carbon source {spec!r}: constant needs a number, e.g. constant:250") from None
    if kind not in _KINDS:
        raise CarbonSourceError(f"unknown carbon source {spec!r}; use one of: {FORMS}")
    if kind != "uk" and not arg:
        raise CarbonSourceError(f"carbon source {spec!r} needs a value after ':'; use one of: {FORMS}")
    if base_url and kind not in _HTTP:
        raise CarbonSourceError(f"carbon source {spec!r}: --base-url applies only to {', '.join(_HTTP)}")
    cls = _KINDS[kind]
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in opts.items() if k in accepted and v is not None}
    if kind in _HTTP:
        kwargs["base_url"] = base_url
    return cls(arg or None, **kwargs)
