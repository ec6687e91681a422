"""`controller report RUN_DIR`: plots (PNG) and one self-contained HTML page from a run directory.

Reads run.jsonl (controller/accounting/runlog.py; event kinds in docs/DESIGN.md) and emissions.csv
(controller/accounting/emissions_csv.py). The per-interval series come from emissions.csv when it
exists, else from the `interval` events. Plots: carbon intensity, cumulative emissions vs
`base`, accuracy and p95, and the configuration timeline (MIG layout and variant per GPU).
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

PLOTS = ("carbon_intensity", "emissions_vs_base", "accuracy", "configuration")


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


def _num(v: Any) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def load_intervals(run_dir: Path, events: list[dict]) -> list[Interval]:
    from controller.accounting.emissions_csv import read_rows

    csv_path = run_dir / "emissions.csv"
    if csv_path.exists():
        return [Interval(
            t=datetime.fromisoformat(r["timestamp"]).replace(tzinfo=timezone.utc),
            duration_s=float(r["duration"]), energy_j=float(r["energy_consumed"]) * J_PER_KWH,
            carbon_g=float(r["emissions"]) * 1000, baseline_g=(_num(r.get("baseline_emissions")) or 0.0) * 1000,
            intensity=_num(r.get("carbon_intensity")), accuracy=_num(r.get("accuracy")), p95_ms=_num(r.get("p95_ms")),
            requests=int(_num(r.get("requests")) or 0), estimated=r.get("estimated") == "True",
        ) for r in read_rows(csv_path)]
    return [Interval(
        t=_ts(e["ts"]), duration_s=float(e.get("duration_s", 0)), energy_j=float(e.get("energy_j", 0)),
        carbon_g=float(e.get("carbon_g", 0)), baseline_g=float(e.get("baseline_carbon_g", 0)),
        intensity=_num(e.get("carbon_intensity")), accuracy=_num(e.get("accuracy")), p95_ms=_num(e.get("p95_ms")),
        requests=int(e.get("requests", 0) or 0), estimated=bool(e.get("estimated", False)),
    ) for e in events if e.get("kind") == "interval"]


def summarize(events: list[dict], intervals: list[Interval]) -> dict[str, Any]:
    start = next((e for e in events if e.get("kind") == "start"), {})
    carbon = sum(i.carbon_g for i in intervals)
    base = sum(i.baseline_g for i in intervals)
    reqs = sum(i.requests for i in intervals)
    acc = [(i.accuracy, i.requests) for i in intervals if i.accuracy is not None]
    p95 = [i.p95_ms for i in intervals if i.p95_ms is not None]
    plans = [e for e in events if e.get("kind") == "plan"]
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
        "estimated energy": "yes" if any(i.estimated for i in intervals) else "no",
    }


def uses_electricity_maps(events: list[dict]) -> bool:
    """ODbL attribution is due when the carbon data came from Electricity Maps (API or emaps_* trace)."""
    sources = [str(e.get("carbon_source", "")) for e in events if e.get("kind") == "start"]
    sources += [str(e.get("source", "")) for e in events if e.get("kind") == "carbon"]
    return any(s.startswith("electricitymaps:") or s.startswith("trace:") and "emaps" in s for s in sources)


def _series_plots(out: Path, events: list[dict], intervals: list[Interval]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)

    carbon_events = [e for e in events if e.get("kind") == "carbon" and _num(e.get("value")) is not None]
    fig, ax = plt.subplots(figsize=(9, 3))
    if carbon_events:
        ts = [_ts(e["ts"]) for e in carbon_events]
        ax.step(ts, [float(e["value"]) for e in carbon_events], where="post", label="carbon intensity")
        stale = [(t, float(e["value"])) for t, e in zip(ts, carbon_events) if e.get("stale")]
        if stale:
            ax.scatter(*zip(*stale), color="red", marker="x", label="stale (last good value)", zorder=3)
    else:
        pts = [(i.t, i.intensity) for i in intervals if i.intensity is not None]
        if pts:
            ax.step(*zip(*pts), where="post", label="carbon intensity")
    ax.set_ylabel("gCO2/kWh")
    ax.set_title("Grid carbon intensity")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    save(fig, "carbon_intensity")

    fig, ax = plt.subplots(figsize=(9, 3))
    ts = [i.t for i in intervals]
    cum, cum_base = [], []
    for i in intervals:
        cum.append((cum[-1] if cum else 0.0) + i.carbon_g)
        cum_base.append((cum_base[-1] if cum_base else 0.0) + i.baseline_g)
    ax.plot(ts, cum, label="Clover")
    ax.plot(ts, cum_base, "--", label="base (largest variant on 7g)")
    ax.set_ylabel("cumulative gCO2eq")
    ax.set_title("Emissions vs base")
    ax.legend(loc="upper left")
    save(fig, "emissions_vs_base")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True)
    acc = [(i.t, i.accuracy) for i in intervals if i.accuracy is not None]
    if acc:
        ax1.plot(*zip(*acc), marker=".")
    ax1.set_ylabel("accuracy")
    ax1.set_title("Accuracy and p95 latency per interval")
    p95 = [(i.t, i.p95_ms) for i in intervals if i.p95_ms is not None]
    if p95:
        ax2.plot(*zip(*p95), marker=".", color="tab:orange")
    sla = next((_num(e.get("sla_ms")) for e in events if e.get("kind") == "start"), None)
    if sla:
        ax2.axhline(sla, color="red", linestyle=":", label=f"SLA {sla:g} ms")
        ax2.legend(loc="upper right")
    ax2.set_ylabel("p95 (ms)")
    save(fig, "accuracy")
    return paths


def _configuration_plot(out: Path, events: list[dict], end: datetime) -> Path:
    """One row per GPU; each slice drawn at its memory slots, coloured by variant, per plan period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from configs import load_gpu_catalog
    from controller.planning.plan import Plan

    catalog = load_gpu_catalog()
    plans = [(_ts(e["ts"]), Plan.from_json(e["plan"])) for e in events if e.get("kind") == "plan" and e.get("plan")]
    gpu_ids = sorted({g.gpu_id for _, p in plans for g in p.gpus})
    variants = sorted({s.variant or "(idle)" for _, p in plans for g in p.gpus for s in g.slices})
    colors = {v: plt.get_cmap("tab20")(k % 20) for k, v in enumerate(variants)}
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.9 * max(1, len(gpu_ids))))
    for k, (t0, plan) in enumerate(plans):
        t1 = plans[k + 1][0] if k + 1 < len(plans) else max(end, t0)
        x0 = matplotlib.dates.date2num(t0)
        width = max(matplotlib.dates.date2num(t1) - x0, 1e-9)
        for g in plan.gpus:
            row = gpu_ids.index(g.gpu_id)
            slots = catalog.get(g.gpu_type).memory_slots
            for s in g.slices:
                size = catalog.get(g.gpu_type).profile(s.placement.profile).size
                y0, h = row + s.placement.start / slots, size / slots
                name = s.variant or "(idle)"
                ax.broken_barh([(x0, width)], (y0 + 0.02, h - 0.04), color=colors[name], edgecolor="black", lw=0.3)
                ax.text(x0 + width / 2, y0 + h / 2, f"{s.placement.profile.split('.')[0]} {name}",
                        ha="center", va="center", fontsize=6, clip_on=True)
    ax.xaxis_date()
    ax.set_yticks([r + 0.5 for r in range(len(gpu_ids))], gpu_ids)
    ax.set_ylim(0, max(1, len(gpu_ids)))
    ax.set_title("Configuration timeline (MIG slices by memory slot, coloured by variant)")
    if variants:
        handles = [matplotlib.patches.Patch(color=colors[v], label=v) for v in variants]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    path = out / "configuration.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
    images = _series_plots(out_dir, events, intervals)
    last = max([i.t for i in intervals] + [_ts(e["ts"]) for e in events] or [datetime.now(timezone.utc)])
    images["configuration"] = _configuration_plot(out_dir, events, last)
    page = out_dir / "report.html"
    page.write_text(_html(summarize(events, intervals), images, uses_electricity_maps(events), run_dir))
    return [images[n] for n in PLOTS] + [page]
