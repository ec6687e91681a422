"""Where the grid of a carbon source is: country (ISO 3166 alpha-3 and name) and region.

Why: CodeCarbon's emissions.csv has `country_name`, `country_iso_code` and `region` columns,
and its dashboard calls `.upper()` on the country code; Clover knows the grid from the carbon
source itself, so it fills them from there instead of guessing from the host's IP address.

Every source is reduced to an Electricity Maps zone code (`DE`, `GB`, `US-CAL-CISO`, `NO-NO1`):
ISO 3166 alpha-2 country, optionally `-SUBZONE`. Bundled traces say their zone in
configs/traces/zones.yaml; `electricitymaps:ZONE` is one; `uk[:N]` is GB; the main WattTime
balancing authorities map to their US zone. `constant:G` and traces without a zone have no
location (empty columns): nothing honest can be said.

Region follows CodeCarbon's habit: the lower-case state name for a US zone inside one state
(`california`), the sub-zone code otherwise (`NO1` for Norway's bidding zone NO1, which
CodeCarbon's Nordic table knows), empty for a whole country.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pycountry

from configs import ConfigError, trace_zone

# Electricity Maps US sub-zones that lie inside one state, by their second part.
_US_STATES = {"CAL": "california", "TEX": "texas", "NY": "new york", "FLA": "florida"}
# WattTime region prefixes -> Electricity Maps zone (the large US balancing authorities).
_WATTTIME = {"CAISO": "US-CAL-CISO", "ERCOT": "US-TEX-ERCO", "NYISO": "US-NY-NYIS", "PJM": "US-MIDA-PJM",
             "MISO": "US-MIDW-MISO", "ISONE": "US-NE-ISNE", "SPP": "US-CENT-SWPP", "BPA": "US-NW-BPAT"}


@dataclass(frozen=True)
class GridLocation:
    country_name: str = ""
    country_iso_code: str = ""  # ISO 3166 alpha-3, e.g. "DEU"
    region: str = ""
    zone: str = ""  # the Electricity Maps zone code it came from


def zone_location(zone: str) -> GridLocation:
    """The location of an Electricity Maps zone code; an unknown country gives an empty country."""
    country_code, _, sub = zone.strip().partition("-")
    country = pycountry.countries.get(alpha_2=country_code.upper())
    if country is None:
        return GridLocation(region=zone, zone=zone)
    region = ""
    if sub:
        region = _US_STATES.get(sub.split("-")[0].upper(), sub) if country.alpha_2 == "US" else sub
    return GridLocation(country.name, country.alpha_3, region, zone)


def _uk_region(arg: str) -> str:
    from controller.carbon.uk import REGIONS

    return REGIONS[int(arg)].lower() if arg.isdigit() and int(arg) in REGIONS else ""


def source_location(spec: str) -> GridLocation:
    """The location of a carbon source spec (`trace:…`, `electricitymaps:…`, `watttime:…`, `uk[:N]`, `constant:…`)."""
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "electricitymaps" and arg:
        return zone_location(arg)
    if kind == "uk":
        return replace(zone_location("GB"), region=_uk_region(arg))
    if kind == "watttime":
        zone = next((z for prefix, z in _WATTTIME.items() if arg.upper().startswith(prefix)), None)
        return zone_location(zone) if zone else GridLocation()
    if kind == "trace" and arg:
        try:
            zone = trace_zone(arg)
        except ConfigError:
            return GridLocation()
        return zone_location(zone) if zone else GridLocation()
    return GridLocation()
