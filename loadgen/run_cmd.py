"""`loadgen run`: offer Poisson traffic to one or several Clover services and print what came back.

`--service yolo --rate 20` loads one service at `/v1/infer`; `--service yolo=30,albert=5` loads
each at `/v1/{service}/infer` with its own rate (loadgen/targets.py), reported per service and in total.

Exit code 0 whenever the run happened, however many requests the server failed (the table and
the JSON say so); 2 only when the arguments or the input files cannot be used.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.cli import UsageError
from configs.loader import ConfigError
from loadgen.errors import LoadgenInputError
from loadgen.generator import run_loads
from loadgen.results import SUMMARY_KEYS, LoadResult, LoadStats, MultiLoadResult
from loadgen.targets import service_loads_from_flags, slas_from_flags
from loadgen.timeline import write_timelines

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `2m` or `1h` in seconds (argparse type, so a bad value is a usage error)."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 60, 60s, 2m or 1h, got {text!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _positive(kind: type[int] | type[float]):
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", metavar="R",
                        help="constant mean request rate (requests/s): R for every service, or yolo=30,albert=5")
    parser.add_argument("--rate-trace", metavar="FILE",
                        help="CSV 't_s,rate_rps' (first row t_s=0): piecewise-constant rate, the last holding to the "
                             "end; or arrival times with a first column TIMESTAMP (looped); or a bundled name: "
                             "azure_llm_2023_conv, azure_llm_2023_code. FILE for every service, or yolo=FILE,albert=FILE")
    parser.add_argument("--rate-scale", type=_positive(float), default=1.0, metavar="S",
                        help="multiply the --rate-trace's rate by S (default: 1)")
    parser.add_argument("--time-scale", type=_positive(float), default=1.0, metavar="K",
                        help="stretch (K>1) or compress (K<1) the --rate-trace's time axis, rates kept (default: 1)")
    parser.add_argument("--duration", type=parse_duration, required=True, metavar="D",
                        help="how long to send: seconds, or with a unit (90s, 2m, 1h)")
    parser.add_argument("--service", default="yolo", metavar="NAMES",
                        help="services from configs/services.yaml: yolo (sent to /v1/infer), or several with their "
                             "rates, yolo=30,albert=5 (each sent to /v1/{service}/infer) (default: yolo)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="controller ingress (default: %(default)s)")
    parser.add_argument("--payloads", metavar="PATH",
                        help="folder of JPEG/PNG (yolo, efficientnet) or SQuAD-style JSON file (albert); "
                             "PATH for every service, or yolo=DIR,albert=FILE (default: synthetic)")
    parser.add_argument("--concurrency", type=_positive(int), default=64, metavar="N",
                        help="most requests in flight per service; arrivals beyond it are counted as "
                             "dropped_client_side (default: 64)")
    parser.add_argument("--timeout", type=_positive(float), default=10.0, metavar="S",
                        help="per-request deadline in seconds, counted as 'timeout' (default: 10)")
    parser.add_argument("--seed", type=int, default=None, help="seed arrivals and payload choice for a repeatable run")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    parser.add_argument("--timeline", metavar="CSV",
                        help="write the per-second timeline (offered, sent, ok, errors by kind, p95) to this .csv "
                             "file and its plot beside it (.png)")
    parser.add_argument("--sla-ms", metavar="MS",
                        help="p95 SLA in ms, drawn as a line on the timeline plot: MS, or yolo=60,albert=120")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise LoadgenInputError(f"--url {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LoadgenInputError(f"--url {url!r}: expected http://HOST:PORT or https://HOST:PORT")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def results_table(result: LoadResult) -> Table:
    """The final summary: one row per figure, errors and variants one row per kind.

    Latency runs from each request's scheduled send time (what a user would have waited),
    service time from its actual send.
    """
    table = Table(title=f"loadgen: {result.service} at {result.url}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    lat = result.latency_ms
    rows: list[tuple[str, str]] = [
        ("duration (s)", f"{result.duration_s:g} (+{result.elapsed_s - result.duration_s:.2f} drain)"),
        ("requested rate (req/s)", f"{result.requested_rate_rps:.2f}"),
        ("offered / achieved rate (req/s)", f"{result.offered_rate_rps:.2f} / {result.achieved_rate_rps:.2f}"),
        ("offered", str(result.offered)),
        ("sent", str(result.sent)),
        ("dropped_client_side", str(result.dropped_client_side)),
        ("ok", str(result.ok)),
        ("failed", str(result.failed)),
    ]
    rows += [(f"  error {kind}", str(n)) for kind, n in result.errors.items()]
    if result.retry_after_seen:
        rows.append(("  with Retry-After", str(result.retry_after_seen)))
    svc = result.service_time_ms
    for name in SUMMARY_KEYS:
        rows.append((f"{name} latency / service time of ok (ms)", f"{_ms(lat[name])} / {_ms(svc[name])}"))
    rows += [(f"variant {name}", str(n)) for name, n in result.variants.items()]
    for metric, value in rows:
        table.add_row(metric, value)
    return table


def services_table(result: MultiLoadResult) -> Table:
    """Several services: one row per service and a total row (latency from the scheduled send), each
    followed by one row per error kind (in `failed`) and per variant (in `ok`); narrow enough for
    80 columns. `--json` has every figure."""
    table = Table(title=f"loadgen: {len(result.services)} services at {result.total.url}", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("service")
    for name in ("req/s", "sent", "ok", "failed", "dropped", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(name, justify="right")
    rows = [*result.services.items(), ("total", result.total)]
    for i, (name, r) in enumerate(rows):
        lat = r.latency_ms
        table.add_row(name, f"{r.requested_rate_rps:.2f}", str(r.sent), str(r.ok), str(r.failed),
                      str(r.dropped_client_side), _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]))
        for kind, n in r.errors.items():
            table.add_row(f"  {kind}", "", "", "", str(n), style="red")
        for variant, n in r.variants.items():
            table.add_row(f"  {variant}", "", "", str(n), style="dim")
        if i == len(rows) - 2:  # a line above the total
            table.add_section()
    return table


def _progress_callback(progress: Progress, task_id, duration_s: float):
    def update(elapsed_s: float, stats: LoadStats) -> None:
        progress.update(task_id, completed=min(elapsed_s, duration_s),
                        description=f"sent {stats.sent}  ok {stats.ok}  failed {stats.failed}  "
                                    f"dropped {stats.dropped_client_side}  in flight {stats.in_flight}")
    return update


def run(args: argparse.Namespace) -> int:
    try:
        _check_url(args.url)
        loads = service_loads_from_flags(args.service, args.rate, args.rate_trace, args.payloads, args.seed,
                                        rate_scale=args.rate_scale, time_scale=args.time_scale)
        slas = slas_from_flags(args.sla_ms, [load.service for load in loads])
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        if args.timeline and Path(args.timeline).suffix != ".csv":
            raise LoadgenInputError(f"--timeline {args.timeline!r}: give a .csv file name (the plot goes beside it)")
    except (LoadgenInputError, UsageError, ConfigError, OSError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)  # plain print: rich would wrap long paths
        return 2
    kwargs = dict(concurrency=args.concurrency, timeout_s=args.timeout, seed=args.seed)
    if args.no_progress:
        result = asyncio.run(run_loads(args.url, loads, args.duration, **kwargs))
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task_id = progress.add_task("starting", total=args.duration)
            result = asyncio.run(run_loads(args.url, loads, args.duration,
                                           on_progress=_progress_callback(progress, task_id, args.duration), **kwargs))
    Console().print(results_table(result.total) if len(result.services) == 1 else services_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if args.timeline:
        for path in write_timelines(result, args.timeline, sla_ms=slas):
            print(f"timeline: {path}")
    return 0
