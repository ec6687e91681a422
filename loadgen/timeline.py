"""The per-second timeline of a load run as CSV and as a PNG plot (`loadgen run --timeline FILE`).

The evidence that a MIG re-partition dropped nothing: for every second of the run, how many
requests were offered, sent, answered and failed (by kind), and the p95 latency of the ones that
succeeded (from their scheduled send time). `write_timeline(result, path)` is the one call for
one result (the demo); `write_timelines` writes a run over several services (the CLI).
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadgen.results import LoadResult, MultiLoadResult, TimelineRow

BASE_COLUMNS = ("second", "offered", "sent", "dropped_client_side", "ok", "failed")


def timeline_columns(rows: Sequence[TimelineRow]) -> tuple[str, ...]:
    """Fixed columns, one `errors_<kind>` column per error kind seen in the run, then the p95s."""
    kinds = sorted({kind for r in rows for kind in r.errors})
    return (*BASE_COLUMNS, *(f"errors_{k}" for k in kinds), "p95_ms", "p95_service_ms")


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def write_timeline_csv(rows: Sequence[TimelineRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = timeline_columns(rows)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            errors = [r.errors.get(c.removeprefix("errors_"), 0) for c in columns if c.startswith("errors_")]
            writer.writerow([r.second, r.offered, r.sent, r.dropped_client_side, r.ok, r.failed, *errors,
                             _cell(r.p95_ms), _cell(r.p95_service_ms)])
    return path


def plot_timeline(rows: Sequence[TimelineRow], path: str | Path, *, sla_ms: float | None = None,
                  title: str = "") -> Path:
    """Two panels on one time axis: offered/ok/failed per second, and p95 latency with the SLA line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = [r.second for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    top.step(t, [r.offered for r in rows], where="post", label="offered", color="tab:gray")
    top.step(t, [r.ok for r in rows], where="post", label="ok", color="tab:green")
    top.step(t, [r.failed + r.dropped_client_side for r in rows], where="post", label="failed + dropped",
             color="tab:red")
    top.set_ylabel("requests / s")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title or "Load generator timeline (by scheduled send second)")
    p95 = [(r.second, r.p95_ms) for r in rows if r.p95_ms is not None]
    if p95:
        bottom.plot(*zip(*p95), marker=".", color="tab:orange", label="p95 from scheduled send")
    if sla_ms is not None:
        bottom.axhline(sla_ms, color="red", linestyle=":", label=f"SLA {sla_ms:g} ms")
    if p95 or sla_ms is not None:
        bottom.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel("p95 latency (ms)")
    bottom.set_xlabel("second of the run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_timeline(result: LoadResult, path: str | Path, *, sla_ms: float | None = None) -> tuple[Path, Path]:
    """The timeline CSV at `path` and its plot beside it (same name, .png); returns both paths."""
    csv_path = write_timeline_csv(result.timeline, path)
    png = plot_timeline(result.timeline, csv_path.with_suffix(".png"), sla_ms=sla_ms,
                        title=f"loadgen: {result.service} at {result.url}")
    return csv_path, png


def write_timelines(result: MultiLoadResult, path: str | Path, *, sla_ms: Mapping[str, float] | None = None) -> list[Path]:
    """One service: its timeline at `path`. Several: the total at `path` and each service's beside it
    (`timeline-yolo.csv`), each plot with that service's SLA line. Returns every file written."""
    slas = sla_ms or {}
    if len(result.services) == 1:
        (only,) = result.services.values()
        return list(write_timeline(only, path, sla_ms=slas.get(only.service)))
    path = Path(path)
    out = list(write_timeline(result.total, path))
    for name, service_result in result.services.items():
        out += write_timeline(service_result, path.with_name(f"{path.stem}-{name}{path.suffix}"), sla_ms=slas.get(name))
    return out
