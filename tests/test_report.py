"""`controller report` on a run directory written by the real Accountant, RunLog and emissions writer."""
from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from PIL import Image

from configs import load_services
from controller.accounting import runlog
from controller.accounting.attribution import Accountant, SliceActivity
from controller.accounting.emissions_csv import EmissionsCsv
from controller.accounting.overview_plot import (
    LayoutSegment,
    count_changes,
    cumulative_carbon,
    gpu_timeline,
    layout_change_times,
    layout_segments,
)
from controller.accounting.report import Interval, build_report
from controller.accounting.runlog import RunLog
from controller.carbon.spec import make_source
from controller.cli import main
from controller.planning.plan import GpuPlan, Plan, SliceAssignment
from mig.types import Placement
from models.performance import PerformanceModel
from tests.fake_nvml import FakeClock

GPU = "H100-80GB"


def _plan(variant_a: str, variant_b: str) -> Plan:
    mixed = GpuPlan("gpu0", GPU, (SliceAssignment(Placement("4g.40gb", 0), variant_a, 1, 0.4),
                                  SliceAssignment(Placement("3g.40gb", 4), variant_b, 1, 0.3)))
    whole = GpuPlan("gpu1", GPU, (SliceAssignment(Placement("7g.80gb", 0), "yolo11x", 1, 0.3),))
    return Plan("yolo", (mixed, whole), rate_rps=50.0)


def _slices(plan: Plan) -> list[SliceActivity]:
    sizes = {"4g.40gb": 4, "3g.40gb": 3, "7g.80gb": 7}
    return [SliceActivity(g.gpu_id, f"{s.placement.profile.split('.')[0]}@{s.placement.start}",
                          sizes[s.placement.profile], s.variant, busy_s=12.0) for g, s in plan.replicas()]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """Eight 30-s intervals, CI from the bundled Electricity Maps DE trace, one plan change halfway;
    the run log's clock is the intervals' so events and emissions.csv rows share one time axis."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    wall = FakeClock(t0.timestamp())
    monkeypatch.setattr(runlog, "time", SimpleNamespace(time=wall))
    log = RunLog(tmp_path)
    clock = FakeClock()
    source = make_source("trace:emaps_de_2023", time_scale=3600, clock=clock)
    acct = Accountant(load_services().get("yolo"), {"gpu0": GPU, "gpu1": GPU}, PerformanceModel.default())
    csv_out = EmissionsCsv(tmp_path / "emissions.csv", run_id="test-run", gpu_count=2,
                           gpu_model="NVIDIA H100 80GB HBM3", carbon_source=source.name)
    log.event("start", "controller started", service="yolo", lam=0.5, sla_ms=45.0,
              carbon_source=source.name, gpus=["gpu0", "gpu1"])
    for k in range(8):
        if k in (0, 4):
            plan = _plan("yolo11m", "yolo11s") if k == 0 else _plan("yolo11n", "yolo11n")
            log.event("plan", "plan applied", plan=plan.to_json(), predicted_carbon_g_per_h=10.0,
                      predicted_accuracy=50.0, predicted_p95_ms=30.0, solve_ms=12.0, changed=True)
        reading = source.current()
        log.event("carbon", "carbon intensity", value=reading.value_gco2_per_kwh, source=reading.source,
                  stale=False)
        reqs = {s.variant: 500 for _, s in plan.replicas()}
        a = acct.record_interval(30.0, {"gpu0": 30.0 * 180, "gpu1": 30.0 * 150}, _slices(plan), reqs,
                                 reading.value_gco2_per_kwh, 1.5, p95_ms=30.0 + k,
                                 timestamp=t0 + timedelta(seconds=30 * (k + 1)))
        wall.advance(30.0)
        csv_out.append(a, service="yolo")
        log.event("interval", "interval accounted", **a.event_fields())
        clock.advance(1.0)
    log.event("end", "controller stopped", summary={"carbon_g": acct.totals().carbon_g})
    return tmp_path, acct


def test_report_renders_pngs_and_one_self_contained_html(run_dir):
    path, acct = run_dir
    files = build_report(path)
    names = [f.name for f in files]
    assert names == ["overview.png", "carbon_intensity.png", "emissions_vs_base.png", "accuracy.png",
                     "configuration.png", "report.html"]
    for png in files[:5]:
        img = Image.open(png)
        img.verify()
        assert img.size[0] > 300
    overview = Image.open(files[0])
    assert overview.size[1] > 1000 and len(overview.convert("RGB").getcolors(1 << 20)) > 50  # five panels drawn
    assert files[0].stat().st_size > 50_000
    page = files[-1].read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    assert base64.b64decode(images[0]) == files[0].read_bytes()  # the overview comes first
    for b64 in images:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    t = acct.totals()
    assert f"{round(t.carbon_g, 3)}" in page and f"{round(t.baseline_carbon_g, 3)}" in page
    assert f"{round(100 * t.saved_g / t.baseline_carbon_g, 2)}" in page
    assert t.requests == 10000
    assert "<th>plan changes</th><td>2</td>" in page and "<th>requests</th><td>10000</td>" in page
    # the second plan keeps both GPUs' layouts and swaps gpu0's variants
    assert "<th>MIG layout changes</th><td>0</td>" in page and "<th>variant swaps</th><td>1</td>" in page
    assert "Open Database License (ODbL)" in page  # the Electricity Maps trace was used


def test_report_from_interval_events_only_and_no_attribution_for_constant(tmp_path):
    log = RunLog(tmp_path)
    log.event("start", "s", service="yolo", lam=0.1, sla_ms=40.0, carbon_source="constant:250", gpus=["gpu0"])
    for k in range(3):
        for service in ("yolo", "albert"):  # per-service intervals: one line each in the overview
            log.event("interval", "i", duration_s=10.0, energy_j=1000.0, carbon_g=0.1, baseline_carbon_g=0.2,
                      accuracy=50.0, p95_ms=20.0 + 20 * k, requests=100, failed=0, service=service)
    files = build_report(tmp_path, tmp_path / "out")
    assert files[0].name == "overview.png" and Image.open(files[0]).size[0] > 300
    page = files[-1].read_text()
    assert "<th>saved vs base (%)</th><td>50.0</td>" in page and "ODbL" not in page


def test_cli_report_and_bad_dir(run_dir, tmp_path, capsys):
    path, _ = run_dir
    assert main(["report", str(path)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2  # input error: stderr, exit 2 like every command
    captured = capsys.readouterr()
    assert "not a directory" in captured.err and captured.out == ""


def _plan_event(ts: float, *profiles: tuple[str, int, str]) -> dict:
    slices = tuple(SliceAssignment(Placement(p, start), v, 1, 0.5) for p, start, v in profiles)
    return {"ts": ts, "kind": "plan", "plan": Plan("yolo", (GpuPlan("node0/gpu0", GPU, slices),)).to_json()}


def test_layout_segments_from_plans_split_and_merged_back():
    events = [_plan_event(0.0, ("7g.80gb", 0, "yolo11x")),
              _plan_event(10.0, ("4g.40gb", 0, "yolo11m"), ("3g.40gb", 4, "yolo11s")),
              _plan_event(20.0, ("7g.80gb", 0, "yolo11x")),
              _plan_event(25.0, ("7g.80gb", 0, "yolo11x"))]  # unchanged: no new segment
    timeline = gpu_timeline(events)
    assert layout_segments(timeline, end=30.0) == [
        LayoutSegment("node0/gpu0", "7g.80gb", 0, "yolo11x", 0.0, 10.0),
        LayoutSegment("node0/gpu0", "4g.40gb", 0, "yolo11m", 10.0, 20.0),
        LayoutSegment("node0/gpu0", "3g.40gb", 4, "yolo11s", 10.0, 20.0),
        LayoutSegment("node0/gpu0", "7g.80gb", 0, "yolo11x", 20.0, 30.0),
    ]
    assert [s.compute_slices for s in layout_segments(timeline, 30.0)] == [7, 4, 3, 7]
    assert count_changes(timeline, [e["ts"] for e in events]) == (2, 0)
    assert layout_change_times(timeline) == {"node0/gpu0": [0.0, 10.0, 20.0]}


def test_layout_from_what_ran_prefers_mig_ops_and_replicas_over_plans():
    def ev(ts: float, kind: str, **fields) -> dict:
        return {"ts": ts, "kind": kind, **fields}

    def mig(ts: float, op: str, profile: str, start: int) -> dict:
        return ev(ts, "mig_op", node="node0", gpu=0, op=op, profile=profile, start=start, ok=True)

    def replica(ts: float, slice_id: str, variant: str, state: str) -> dict:
        return ev(ts, "replica", gpu="node0/gpu0", slice=slice_id, variant=variant, state=state)

    events = [
        _plan_event(0.0, ("7g.80gb", 0, "yolo11x")),  # first deployment: not counted
        mig(1.0, "create", "7g.80gb", 0), replica(2.0, "7g.80gb@0", "yolo11x", "up"),
        _plan_event(10.0, ("7g.80gb", 0, "yolo11l")),  # variant swap, make before break
        replica(11.0, "7g.80gb@0", "yolo11l", "starting"), replica(12.0, "7g.80gb@0", "yolo11l", "up"),
        replica(13.0, "7g.80gb@0", "yolo11x", "down"),
        _plan_event(20.0, ("4g.40gb", 0, "yolo11m"), ("3g.40gb", 4, "yolo11s")),  # one MIG layout change
        replica(21.0, "7g.80gb@0", "yolo11l", "down"), mig(22.0, "destroy", "7g.80gb", 0),
        mig(23.0, "create", "4g.40gb", 0), mig(23.5, "create", "3g.40gb", 4),
        ev(23.7, "mig_op", node="node0", gpu=0, op="create", profile="1g.10gb", start=6, ok=False),  # failed: no-op
        replica(24.0, "4g.40gb@0", "yolo11m", "up"), replica(25.0, "3g.40gb@4", "yolo11s", "up"),
    ]
    timeline = gpu_timeline(events)
    segments = [(s.profile, s.variant, s.t0, s.t1) for s in layout_segments(timeline, end=30.0)]
    assert segments == [
        ("7g.80gb", None, 1.0, 2.0), ("7g.80gb", "yolo11x", 2.0, 12.0), ("7g.80gb", "yolo11l", 12.0, 21.0),
        ("7g.80gb", None, 21.0, 22.0), ("4g.40gb", None, 23.0, 24.0), ("3g.40gb", None, 23.5, 25.0),
        ("4g.40gb", "yolo11m", 24.0, 30.0), ("3g.40gb", "yolo11s", 25.0, 30.0),
    ]
    assert count_changes(timeline, [e["ts"] for e in events if e["kind"] == "plan"]) == (1, 1)
    assert layout_change_times(timeline) == {"node0/gpu0": [1.0, 22.0, 23.0, 23.5]}


def test_cumulative_carbon_per_service():
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def row(k: int, service: str, carbon: float, base: float) -> Interval:
        return Interval(t=t0 + timedelta(seconds=10 * k), duration_s=10.0, energy_j=1.0, carbon_g=carbon,
                        baseline_g=base, intensity=None, accuracy=None, p95_ms=None, requests=1, estimated=False,
                        service=service)

    series = cumulative_carbon([row(1, "yolo", 1.0, 2.0), row(1, "bert", 5.0, 5.0), row(2, "yolo", 0.5, 2.0),
                                row(3, "yolo", 0.25, 1.0)])
    assert list(series) == ["yolo", "bert"]
    assert series["yolo"].carbon_g == [0.0, 1.0, 1.5, 1.75] and series["yolo"].baseline_g == [0.0, 2.0, 4.0, 5.0]
    assert series["yolo"].t == [t0 + timedelta(seconds=10 * k) for k in (0, 1, 2, 3)]
    assert series["bert"].carbon_g == [0.0, 5.0] and series["bert"].baseline_g == [0.0, 5.0]
