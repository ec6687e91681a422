"""overview.png: the whole run on one time axis, so cause and effect line up at a glance.

The separate report plots each answer one question; this figure stacks five panels with a shared
x axis (wall-clock time) so a reader sees *why* something happened: the grid got dirtier (1) or
the load rose (2), the controller re-partitioned or swapped variants (3), and what that did to the
emissions against `base` (4) and to the latency against the SLA (5).

The event-to-series helpers are pure (no matplotlib) and unit-tested: `gpu_timeline` turns the
run log into what each GPU held over time, `layout_segments` into bars, `count_changes` into the
MIG-layout-change and variant-swap counts, `cumulative_carbon` into running sums per service.
The `draw_*` functions draw one panel on a given Axes; report.py also uses them for its
single-panel PNGs, so each series is drawn by one piece of code. (Over 300 lines because the
five panels share their series helpers and axis handling; split, each panel would import the rest.)
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mig.placement import compute_slices_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from controller.accounting.report import Interval

COMPUTE_SLICES = 7  # an A100/H100/H200 has 7 compute slices; a lane's height is one GPU


@dataclass(frozen=True)
class SliceState:
    """One MIG instance and the variant serving on it (None: the instance idles)."""

    profile: str
    start: int
    variant: str | None


# gpu_id -> [(epoch seconds, the slices the GPU holds from then on)], in time order, each entry
# differing from the one before
GpuTimeline = dict[str, list[tuple[float, frozenset[SliceState]]]]


@dataclass(frozen=True)
class LayoutSegment:
    """One bar of the layout panel: a slice with one variant over [t0, t1) (epoch seconds)."""

    gpu_id: str
    profile: str
    start: int
    variant: str | None
    t0: float
    t1: float

    @property
    def compute_slices(self) -> int:
        return compute_slices_of(self.profile)


@dataclass(frozen=True)
class CarbonSeries:
    """Running sums of one service's emissions and of what `base` would have emitted."""

    t: list[datetime]
    carbon_g: list[float]
    baseline_g: list[float]


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _append(timeline: GpuTimeline, gpu_id: str, ts: float, slices: Iterable[SliceState]) -> None:
    states = timeline.setdefault(gpu_id, [])
    now = frozenset(slices)
    if not states or states[-1][1] != now:
        states.append((ts, now))


def planned_timeline(events: Sequence[dict[str, Any]]) -> GpuTimeline:
    """What the `plan` events asked of each GPU; a GPU left out of a later plan holds nothing."""
    from controller.planning.plan import Plan

    timeline: GpuTimeline = {}
    for e in events:
        if e.get("kind") != "plan" or not e.get("plan"):
            continue
        plan = Plan.from_json(e["plan"])
        planned = {g.gpu_id: g for g in plan.gpus}
        for gpu_id in planned.keys() | timeline.keys():
            slices = planned[gpu_id].slices if gpu_id in planned else ()
            _append(timeline, gpu_id, e["ts"],
                    (SliceState(s.placement.profile, s.placement.start, s.variant) for s in slices))
    return timeline


def _mig_op_gpu_id(e: dict[str, Any]) -> str:
    """mig_op events name the GPU by node and index; gpu_node/agent.py's `gpu_id` joins them so."""
    return f"{e['node']}/gpu{e['gpu']}"


def observed_timeline(events: Sequence[dict[str, Any]]) -> GpuTimeline:
    """What ran: MIG instances from successful `mig_op` events, variants from `replica` events.

    A replica that comes up on a slice replaces the variant shown there (make-before-break puts
    the new one up before the old one drains); one that goes down leaves its slice idle unless
    another variant already took it over.
    """
    held: dict[str, dict[tuple[str, int], str | None]] = {}
    timeline: GpuTimeline = {}
    for e in events:
        kind = e.get("kind")
        if kind == "mig_op" and e.get("ok", True):
            gpu_id = _mig_op_gpu_id(e)
            slices = held.setdefault(gpu_id, {})
            key = (e["profile"], int(e["start"]))
            if e["op"] == "create":
                slices[key] = None
            else:
                slices.pop(key, None)
        elif kind == "replica" and e.get("state") in ("up", "down"):
            gpu_id = e["gpu"]
            slices = held.setdefault(gpu_id, {})
            profile, start = e["slice"].split("@")
            key = (profile, int(start))
            if e["state"] == "up":
                slices[key] = e.get("variant")
            elif slices.get(key) == e.get("variant"):
                slices[key] = None
        else:
            continue
        _append(timeline, gpu_id, e["ts"], (SliceState(p, s, v) for (p, s), v in slices.items()))
    return timeline


def gpu_timeline(events: Sequence[dict[str, Any]]) -> GpuTimeline:
    """What actually ran when the run log recorded it (mig_op/replica events), else the plans."""
    if any(e.get("kind") in ("mig_op", "replica") for e in events):
        return observed_timeline(events)
    return planned_timeline(events)


def layout_segments(timeline: GpuTimeline, end: float) -> list[LayoutSegment]:
    """Maximal runs of each (slice, variant) per GPU; the last ones close at `end`."""
    out: list[LayoutSegment] = []
    for gpu_id, states in timeline.items():
        opened: dict[SliceState, float] = {}
        for ts, slices in states:
            for s in [s for s in opened if s not in slices]:
                out.append(LayoutSegment(gpu_id, s.profile, s.start, s.variant, opened.pop(s), ts))
            for s in slices - opened.keys():
                opened[s] = ts
        out += [LayoutSegment(gpu_id, s.profile, s.start, s.variant, t0, max(end, t0)) for s, t0 in opened.items()]
    return sorted(out, key=lambda g: (g.gpu_id, g.t0, g.start))


def _layout(slices: frozenset[SliceState]) -> frozenset[tuple[str, int]]:
    return frozenset((s.profile, s.start) for s in slices)


def layout_change_times(timeline: GpuTimeline) -> dict[str, list[float]]:
    """Per GPU, when its MIG instances changed (each mig_op, or each plan that re-partitioned)."""
    out: dict[str, list[float]] = {}
    for gpu_id, states in timeline.items():
        before: frozenset[tuple[str, int]] = frozenset()
        for ts, slices in states:
            if _layout(slices) != before:
                out.setdefault(gpu_id, []).append(ts)
            before = _layout(slices)
    return out


def count_changes(timeline: GpuTimeline, step_starts: Sequence[float]) -> tuple[int, int]:
    """(MIG layout changes, variant swaps), counted as the rollout does: per GPU and plan step, a
    step that re-partitioned is one layout change, one that only changed variants a swap.

    `step_starts` are the plan events' times; what happens before the second plan is the first
    deployment and is not counted (the demo's summary leaves it out too).
    """
    layout_steps: set[tuple[str, int]] = set()
    swap_steps: set[tuple[str, int]] = set()
    for gpu_id, states in timeline.items():
        for (_, before), (ts, now) in pairwise(states):
            step = bisect_right(step_starts, ts) - 1
            if step < 1:
                continue
            (layout_steps if _layout(before) != _layout(now) else swap_steps).add((gpu_id, step))
    return len(layout_steps), len(swap_steps - layout_steps)


def cumulative_carbon(intervals: Sequence[Interval]) -> dict[str, CarbonSeries]:
    """Per service, the running sums of the run's carbon and of base's: 0 where its first interval
    starts, then the sums at each interval's end."""
    out: dict[str, CarbonSeries] = {}
    for i in intervals:
        if i.service not in out:
            out[i.service] = CarbonSeries([i.t - timedelta(seconds=i.duration_s)], [0.0], [0.0])
        s = out[i.service]
        s.t.append(i.t)
        s.carbon_g.append((s.carbon_g[-1] if s.carbon_g else 0.0) + i.carbon_g)
        s.baseline_g.append((s.baseline_g[-1] if s.baseline_g else 0.0) + i.baseline_g)
    return out


def sla_by_service(events: Sequence[dict[str, Any]], default_service: str) -> dict[str, float]:
    """Each service's SLA as last set (its `start` event, then `config` events)."""
    out: dict[str, float] = {}
    for e in events:
        if e.get("kind") in ("start", "config") and e.get("sla_ms") is not None:
            out[e.get("service") or default_service] = float(e["sla_ms"])
    return out


def _by_service(intervals: Sequence[Interval]) -> dict[str, list[Interval]]:
    out: dict[str, list[Interval]] = {}
    for i in intervals:
        out.setdefault(i.service, []).append(i)
    return out


def _label(service: str, what: str, several: bool) -> str:
    return f"{service}: {what}" if several else what


def _finish(ax: Axes, empty: str, loc: str = "upper right") -> None:
    """A legend when something was drawn, else say what the run log lacked."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize=7)
    else:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="gray")


# -- panels -------------------------------------------------------------------------------------
def draw_intensity(ax: Axes, events: Sequence[dict[str, Any]], intervals: Sequence[Interval]) -> None:
    """Carbon intensity from the `carbon` events (stale readings marked), else the interval rows."""
    readings = [e for e in events if e.get("kind") == "carbon" and e.get("value") is not None]
    if readings:
        ts = [to_datetime(e["ts"]) for e in readings]
        ax.step(ts, [float(e["value"]) for e in readings], where="post", label="carbon intensity")
        stale = [(t, float(e["value"])) for t, e in zip(ts, readings) if e.get("stale")]
        if stale:
            ax.scatter(*zip(*stale), color="red", marker="x", label="stale (last good value)", zorder=3)
    else:
        pts = [(i.t, i.intensity) for i in intervals if i.intensity is not None]
        if pts:
            ax.step(*zip(*pts), where="post", label="carbon intensity")
    ax.set_ylabel("gCO2/kWh")
    _finish(ax, "no carbon readings in the run")


def draw_load(ax: Axes, events: Sequence[dict[str, Any]], intervals: Sequence[Interval]) -> None:
    """Offered load per interval ((answered + failed) / length) per service, and the rate the
    planner sized for when a `load` event asked for a re-plan."""
    groups = _by_service(intervals)
    for k, (service, rows) in enumerate(groups.items()):
        rows = [i for i in rows if i.duration_s > 0]
        if rows:  # each rate held over its interval: from its start to its end
            xs = [i.t - timedelta(seconds=i.duration_s) for i in rows] + [rows[-1].t]
            ys = [(i.requests + i.failed) / i.duration_s for i in rows]
            ax.step(xs, [*ys, ys[-1]], where="post", color=f"C{k}", label=_label(service, "offered", len(groups) > 1))
    replans = [(to_datetime(e["ts"]), float(e["rate_rps"])) for e in events
               if e.get("kind") == "load" and e.get("rate_rps") is not None]
    if replans:
        ax.scatter(*zip(*replans), marker="^", color="tab:purple", s=14, zorder=3, label="re-plan for load")
    ax.set_ylabel("req/s")
    ax.set_ylim(bottom=0)
    _finish(ax, "no intervals in the run")


def draw_layout(ax: Axes, timeline: GpuTimeline, end: float) -> None:
    """One lane per GPU; each slice a bar over its time range, as tall as its compute slices
    (of 7) at its start slot, coloured and labelled by variant; ticks where the MIG layout changed."""
    import matplotlib
    import matplotlib.dates as mdates
    from matplotlib.patches import Patch

    segments = layout_segments(timeline, end)
    gpu_ids = sorted(timeline)
    ax.set_yticks([r + 0.5 for r in range(len(gpu_ids))], gpu_ids, fontsize=7)
    ax.set_ylim(max(1, len(gpu_ids)), 0)  # first GPU on top, slot 0 at the top of its lane
    if not segments:
        ax.text(0.5, 0.5, "no plan, mig_op or replica events in the run", transform=ax.transAxes, ha="center",
                va="center", color="gray")
        return
    variants = sorted({s.variant or "(idle)" for s in segments})
    cmap = matplotlib.colormaps["tab20"]
    colors = {v: ("white" if v == "(idle)" else cmap(k % 20)) for k, v in enumerate(variants)}
    x_span = max(mdates.date2num(to_datetime(end)) - min(mdates.date2num(to_datetime(s.t0)) for s in segments), 1e-9)
    for seg in segments:
        row = gpu_ids.index(seg.gpu_id)
        size = seg.compute_slices
        y0 = row + min(seg.start, COMPUTE_SLICES - size) / COMPUTE_SLICES
        h = size / COMPUTE_SLICES
        x0 = mdates.date2num(to_datetime(seg.t0))
        width = max(mdates.date2num(to_datetime(seg.t1)) - x0, 1e-9)
        name = seg.variant or "(idle)"
        ax.broken_barh([(x0, width)], (y0 + 0.02, h - 0.04), facecolor=colors[name], edgecolor="black", lw=0.3,
                       hatch="//" if seg.variant is None else None)
        if width / x_span > 0.06 and h >= 2 / COMPUTE_SLICES:  # room for the label
            ax.text(x0 + width / 2, y0 + h / 2, f"{seg.profile.split('.')[0]} {name}", ha="center", va="center",
                    fontsize=7, clip_on=True, bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
    for gpu_id, times in layout_change_times(timeline).items():
        row = gpu_ids.index(gpu_id)
        ax.vlines([to_datetime(t) for t in times], row, row + 1, color="black", lw=1.2, linestyles="--")
    handles = [Patch(facecolor=colors[v], edgecolor="black", hatch="//" if v == "(idle)" else None, label=v)
               for v in variants]
    handles.append(Patch(facecolor="none", edgecolor="black", linestyle="--", label="MIG layout change"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6)


def draw_cumulative(ax: Axes, intervals: Sequence[Interval]) -> None:
    """Cumulative emissions of the run vs base (largest variant on whole GPUs), per service."""
    series = cumulative_carbon(intervals)
    for k, (service, s) in enumerate(series.items()):
        color = f"C{k}"
        ax.plot(s.t, s.carbon_g, color=color, label=_label(service, "Clover", len(series) > 1))
        ax.plot(s.t, s.baseline_g, "--", color=color, label=_label(service, "base (largest variant, 7g)",
                                                                   len(series) > 1))
    ax.set_ylabel("cumulative gCO2eq")
    _finish(ax, "no intervals in the run", loc="upper left")


def draw_p95(ax: Axes, intervals: Sequence[Interval], slas: dict[str, float]) -> None:
    """p95 on the slice per interval and service, the SLA line, intervals over it shaded red."""
    groups = _by_service(intervals)
    several = len(groups) > 1
    for k, (service, rows) in enumerate(groups.items()):
        pts = [(i.t, i.p95_ms) for i in rows if i.p95_ms is not None]
        if pts:
            ax.plot(*zip(*pts), marker=".", color=f"C{k}", label=_label(service, "p95 on the slice", several))
        sla = slas.get(service)
        if sla is None:
            continue
        ax.axhline(sla, color=f"C{k}" if several else "red", linestyle=":",
                   label=_label(service, f"SLA {sla:.1f} ms", several))
        for i in rows:
            if i.p95_ms is not None and i.p95_ms > sla:
                ax.axvspan(i.t - timedelta(seconds=i.duration_s), i.t, color="red", alpha=0.15, lw=0)
    ax.set_ylabel("p95 (ms)")
    _finish(ax, "no p95 in the run's intervals")


def concise_time_axis(ax: Axes) -> None:
    """Date/time ticks that stay readable whether the run took two minutes or two days."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def plot_overview(path: Path, events: Sequence[dict[str, Any]], intervals: Sequence[Interval],
                  timeline: GpuTimeline, slas: dict[str, float], end: float) -> Path:
    """The five panels stacked on one time axis (concise date ticks), written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lanes = max(1, len(timeline))
    fig, axes = plt.subplots(5, 1, figsize=(11, 11 + 0.6 * lanes), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1, 0.6 + 0.5 * lanes, 1, 1]})
    draw_intensity(axes[0], events, intervals)
    draw_load(axes[1], events, intervals)
    draw_layout(axes[2], timeline, end)
    draw_cumulative(axes[3], intervals)
    draw_p95(axes[4], intervals, slas)
    titles = ("Grid carbon intensity", "Offered load", "GPU layout (bar height: compute slices of 7)",
              "Cumulative emissions vs base", "p95 latency on the slice per interval (red: over the SLA)")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    concise_time_axis(axes[-1])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
