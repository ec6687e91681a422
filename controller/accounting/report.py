"""`controller report RUN_DIR`: plots (PNG) and one self-contained HTML page from a run directory.

Reads run.jsonl (controller/accounting/runlog.py; event kinds in docs/DESIGN.md) and emissions.csv
(controller/accounting/emissions_csv.py). The per-interval series come from emissions.csv when it
exists, else from the `interval` events. Plots: overview.png first (the five series below on one
time axis, controller/accounting/overview_plot.py), then carbon intensity, cumulative emissions
vs `base`, accuracy and p95, and the configuration timeline (MIG layout and variant per GPU).
The HTML inlines the PNGs as base64 so it can be mailed or attached as one file.
"""
from __future__ import annotations

import argparse
import base64
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from configs.cli import UsageError
from configs.units import J_PER_KWH, kwh
from controller.accounting import overview_plot as ov

PLOTS = ("overview", "carbon_intensity", "emissions_vs_base", "accuracy", "configuration")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding run.jsonl and emissions.csv")
    parser.add_argument("--out", metavar="DIR", help="where to write the report (default RUN_DIR/report)")


def run(args: argparse.Namespace) -> int:
    for p in build_report(args.run_dir, args.out):  # a ReportError is a usage error: stderr, exit 2
        print(p)
    return 0


class ReportError(UsageError):
    """The run directory cannot be reported on (message says why and what to do)."""


@dataclass(frozen=True)
class Interval:
    t: datetime
    duration_s: float
    energy_j: float
    carbon_g: float
    baseline_g: float
    intensity: float | None
    accuracy: float | None
    p95_ms: float | None
    requests: int
    estimated: bool
    service: str
    failed: int = 0


def _num(v: Any) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def _service(events: list[dict]) -> str:
    return next((str(e.get("service")) for e in events if e.get("kind") == "start"), "?")


def load_intervals(run_dir: Path, events: list[dict]) -> list[Interval]:
    """One row per interval and service (emissions.csv's `project_name`, the interval event's
    `service`, else the run's service)."""
    from controller.accounting.emissions_csv import read_rows

    service = _service(events)
    csv_path = run_dir / "emissions.csv"
    if csv_path.exists():
        return [Interval(
            t=datetime.fromisoformat(r["timestamp"]).replace(tzinfo=timezone.utc),
            duration_s=float(r["duration"]), energy_j=float(r["energy_consumed"]) * J_PER_KWH,
            carbon_g=float(r["emissions"]) * 1000, baseline_g=(_num(r.get("baseline_emissions")) or 0.0) * 1000,
            intensity=_num(r.get("carbon_intensity")), accuracy=_num(r.get("accuracy")), p95_ms=_num(r.get("p95_ms")),
            requests=int(_num(r.get("requests")) or 0), estimated=r.get("estimated") == "True",
            service=r.get("project_name") or service, failed=int(_num(r.get("failed")) or 0),
        ) for r in read_rows(csv_path)]
    return [Interval(
        t=ov.to_datetime(e["ts"]), duration_s=float(e.get("duration_s", 0)), energy_j=float(e.get("energy_j", 0)),
        carbon_g=float(e.get("carbon_g", 0)), baseline_g=float(e.get("baseline_carbon_g", 0)),
        intensity=_num(e.get("carbon_intensity")), accuracy=_num(e.get("accuracy")), p95_ms=_num(e.get("p95_ms")),
        requests=int(e.get("requests", 0) or 0), estimated=bool(e.get("estimated", False)),
        service=e.get("service") or service, failed=int(e.get("failed", 0) or 0),
    ) for e in events if e.get("kind") == "interval"]


def layout_changes(events: list[dict]) -> tuple[int, int]:
    """(MIG layout changes, variant swaps): as the run counted them (the `end` event's summary,
    first deployment excluded), else counted from the run log per GPU and plan step."""
    recorded = next((e["summary"] for e in reversed(events) if e.get("kind") == "end"
                     and isinstance(e.get("summary"), dict) and "mig_layout_changes" in e["summary"]), None)
    if recorded is not None:
        return int(recorded["mig_layout_changes"]), int(recorded.get("variant_swaps", 0))
    return ov.count_changes(ov.gpu_timeline(events), [e["ts"] for e in events if e.get("kind") == "plan"])


def summarize(events: list[dict], intervals: list[Interval]) -> dict[str, Any]:
    start = next((e for e in events if e.get("kind") == "start"), {})
    carbon = sum(i.carbon_g for i in intervals)
    base = sum(i.baseline_g for i in intervals)
    reqs = sum(i.requests for i in intervals)
    acc = [(i.accuracy, i.requests) for i in intervals if i.accuracy is not None]
    p95 = [i.p95_ms for i in intervals if i.p95_ms is not None]
    plans = [e for e in events if e.get("kind") == "plan"]
    mig_changes, swaps = layout_changes(events)
    return {
        "service": start.get("service", "?"),
        "carbon source": start.get("carbon_source", "?"),
        "lambda": start.get("lam", "?"),
        "SLA (ms)": start.get("sla_ms", "?"),
        "intervals": len(intervals),
        "duration (s)": round(sum(i.duration_s for i in intervals), 1),
        "energy (kWh)": round(kwh(sum(i.energy_j for i in intervals)), 6),
        "carbon (g)": round(carbon, 3),
        "base carbon (g)": round(base, 3),
        "saved vs base (%)": round(100 * (base - carbon) / base, 2) if base > 0 else "n/a",
        "requests": reqs,
        "accuracy (request-weighted)": round(sum(a * n for a, n in acc) / max(1, sum(n for _, n in acc)), 3)
        if acc else "n/a",
        "worst interval p95 (ms)": round(max(p95), 2) if p95 else "n/a",
        "plan changes": sum(1 for p in plans if p.get("changed", True)),
        "MIG layout changes": mig_changes,
        "variant swaps": swaps,
        "estimated energy": "yes" if any(i.estimated for i in intervals) else "no",
    }


def uses_electricity_maps(events: list[dict]) -> bool:
    """ODbL attribution is due when the carbon data came from Electricity Maps (API or emaps_* trace)."""
    sources = [str(e.get("carbon_source", "")) for e in events if e.get("kind") == "start"]
    sources += [str(e.get("source", "")) for e in events if e.get("kind") == "carbon"]
    return any(s.startswith("electricitymaps:") or s.startswith("trace:") and "emaps" in s for s in sources)


def _plots(out: Path, events: list[dict], intervals: list[Interval], end: float) -> dict[str, Path]:
    """overview.png, then one PNG per question, each panel drawn by overview_plot's draw_*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = ov.gpu_timeline(events)
    slas = ov.sla_by_service(events, _service(events))
    paths = {"overview": ov.plot_overview(out / "overview.png", events, intervals, timeline, slas, end)}

    def save(fig, name: str, title: str) -> None:
        fig.axes[0].set_title(title)
        fig.tight_layout()
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3))
    ov.draw_intensity(ax, events, intervals)
    save(fig, "carbon_intensity", "Grid carbon intensity")

    fig, ax = plt.subplots(figsize=(9, 3))
    ov.draw_cumulative(ax, intervals)
    save(fig, "emissions_vs_base", "Emissions vs base")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True)
    acc = [(i.t, i.accuracy) for i in intervals if i.accuracy is not None]
    if acc:
        ax1.plot(*zip(*acc), marker=".")
    ax1.set_ylabel("accuracy")
    ov.draw_p95(ax2, intervals, slas)
    save(fig, "accuracy", "Accuracy and p95 latency per interval")

    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.9 * max(1, len(timeline))))
    ov.draw_layout(ax, timeline, end)
    ov.concise_time_axis(ax)
    save(fig, "configuration", "Configuration timeline (MIG slices by compute slice, coloured by variant)")
    return paths


def _html(summary: dict[str, Any], images: dict[str, Path], attribution: bool, run_dir: Path) -> str:
    rows = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    figs = "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(images[name].read_bytes()).decode()}">'
        f"<figcaption>{name.replace('_', ' ')}</figcaption></figure>" for name in PLOTS if name in images)
    from controller.carbon.electricitymaps import ATTRIBUTION

    note = f"<p class='attr'>{html.escape(ATTRIBUTION)}</p>" if attribution else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Clover run report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}.attr{{font-size:small;color:#555}}</style>
</head><body>
<h1>Clover run report</h1><p>Run directory: <code>{html.escape(str(run_dir))}</code></p>
<h2>Summary</h2><table>
{rows}
</table>
<h2>Plots</h2>
{figs}
{note}
</body></html>
"""


def build_report(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Render the PNGs and report.html; returns their paths (HTML last)."""
    from controller.accounting.runlog import read_events

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory; give the run directory of `controller run` or `controller demo`")
    events = read_events(run_dir)
    intervals = load_intervals(run_dir, events)
    if not events and not intervals:
        raise ReportError(f"{run_dir}: no run.jsonl events and no emissions.csv rows; is this a run directory?")
    out_dir = Path(out) if out else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    last = max([i.t for i in intervals] + [ov.to_datetime(e["ts"]) for e in events] or [datetime.now(timezone.utc)])
    images = _plots(out_dir, events, intervals, last.timestamp())
    page = out_dir / "report.html"
    page.write_text(_html(summarize(events, intervals), images, uses_electricity_maps(events), run_dir))
    return [images[n] for n in PLOTS] + [page]
