"""`controller carbon --source SPEC [--base-url URL] [--json]`: print the current carbon intensity."""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="SPEC",
                        help="trace:NAME_OR_PATH, constant:G, electricitymaps:ZONE, watttime:REGION, uk[:REGION]")
    parser.add_argument("--base-url", metavar="URL", help="API base URL (proxy or test server) for HTTP sources")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="HTTP timeout in seconds (10)")
    parser.add_argument("--json", action="store_true",
                        help='print {"value_gco2_per_kwh", "timestamp", "source", "stale"}')


def run(args: argparse.Namespace) -> int:
    from controller.carbon.base import CarbonSourceError
    from controller.carbon.spec import make_source

    try:
        reading = make_source(args.source, args.base_url, timeout_s=args.timeout).current()
    except CarbonSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reading.to_json()))
    else:
        stale = " (stale: last good value)" if reading.stale else ""
        print(f"{reading.value_gco2_per_kwh:.1f} gCO2/kWh at {reading.timestamp.isoformat()} "
              f"from {reading.source}{stale}")
    return 0
