"""`controller report` on a run directory written by the real Accountant, RunLog and emissions writer."""
from __future__ import annotations

import base64
import io
import re
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image

from configs import load_services
from controller.accounting.attribution import Accountant, SliceActivity
from controller.accounting.emissions_csv import EmissionsCsv
from controller.accounting.report import build_report
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
def run_dir(tmp_path):
    """Eight 30-s intervals, CI from the bundled Electricity Maps DE trace, one plan change halfway."""
    log = RunLog(tmp_path)
    clock = FakeClock()
    source = make_source("trace:emaps_de_2023", time_scale=3600, clock=clock)
    acct = Accountant(load_services().get("yolo"), {"gpu0": GPU, "gpu1": GPU}, PerformanceModel.default())
    csv_out = EmissionsCsv(tmp_path / "emissions.csv", run_id="test-run", gpu_count=2,
                           gpu_model="NVIDIA H100 80GB HBM3", carbon_source=source.name)
    log.event("start", "controller started", service="yolo", lam=0.5, sla_ms=45.0,
              carbon_source=source.name, gpus=["gpu0", "gpu1"])
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
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
        csv_out.append(a, service="yolo")
        log.event("interval", "interval accounted", **a.event_fields())
        clock.advance(1.0)
    log.event("end", "controller stopped", summary={"carbon_g": acct.totals().carbon_g})
    return tmp_path, acct


def test_report_renders_pngs_and_one_self_contained_html(run_dir):
    path, acct = run_dir
    files = build_report(path)
    names = [f.name for f in files]
    assert names == ["carbon_intensity.png", "emissions_vs_base.png", "accuracy.png", "configuration.png",
                     "report.html"]
    for png in files[:4]:
        img = Image.open(png)
        img.verify()
        assert img.size[0] > 300
    page = files[-1].read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    for b64 in images:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    t = acct.totals()
    assert f"{round(t.carbon_g, 3)}" in page and f"{round(t.baseline_carbon_g, 3)}" in page
    assert f"{round(100 * t.saved_g / t.baseline_carbon_g, 2)}" in page
    assert t.requests == 10000
    assert "<th>plan changes</th><td>2</td>" in page and "<th>requests</th><td>10000</td>" in page
    assert "Open Database License (ODbL)" in page  # the Electricity Maps trace was used


def test_report_from_interval_events_only_and_no_attribution_for_constant(tmp_path):
    log = RunLog(tmp_path)
    log.event("start", "s", service="yolo", lam=0.1, sla_ms=40.0, carbon_source="constant:250", gpus=["gpu0"])
    for k in range(3):
        log.event("interval", "i", duration_s=10.0, energy_j=1000.0, carbon_g=0.1, baseline_carbon_g=0.2,
                  accuracy=50.0, p95_ms=20.0, requests=100, failed=0)
    files = build_report(tmp_path, tmp_path / "out")
    page = files[-1].read_text()
    assert "<th>saved vs base (%)</th><td>50.0</td>" in page and "ODbL" not in page


def test_cli_report_and_bad_dir(run_dir, tmp_path, capsys):
    path, _ = run_dir
    assert main(["report", str(path)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2  # input error: stderr, exit 2 like every command
    captured = capsys.readouterr()
    assert "not a directory" in captured.err and captured.out == ""
