"""`controller demo` end to end, shortened: the files and the exact summary.json keys."""
import json

import pytest

from controller.accounting.emissions_csv import read_rows
from controller.accounting.runlog import read_events
from controller.demo import SUMMARY_KEYS, run_demo

pytestmark = pytest.mark.slow


def test_short_demo_writes_summary_and_logs(tmp_path):
    summary = run_demo("yolo", 20.0, tmp_path, rate=10.0, replan_every=5.0, echo=False)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary and tuple(on_disk) == SUMMARY_KEYS
    assert summary["requests_sent"] > 100 and summary["requests_failed"] == 0
    assert summary["requests_ok"] == summary["requests_sent"]
    assert summary["carbon_g"] > 0 and summary["baseline_carbon_g"] > 0
    assert summary["accuracy"] > 0 and summary["baseline_accuracy"] == 54.7
    kinds = [e["kind"] for e in read_events(tmp_path)]
    assert kinds[0] == "start" and kinds[-1] == "end" and "interval" in kinds
    assert (tmp_path / "run.log").read_text().count("interval") >= 2
    rows = read_rows(tmp_path / "emissions.csv")
    assert rows and abs(sum(float(r["emissions"]) for r in rows) * 1000 - summary["carbon_g"]) < 1e-3
    # the user-facing latency split: the SLA bounds time on the slice; the client adds the HTTP path
    assert 0 < summary["p95_ms"] <= summary["client_p95_ms"]
    # `controller report` renders a real demo run directory
    from controller.accounting.report import build_report

    paths = build_report(tmp_path)
    html = next(p for p in paths if p.suffix == ".html").read_text()
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert html.count("data:image/png;base64,") >= 4 and "plan" in html.lower()


def test_real_execution_serves_the_small_variants_on_cpu(tmp_path):
    """`controller demo --execution real`: real EfficientNet forward passes in the replicas."""
    summary = run_demo("efficientnet", 15.0, tmp_path, execution="real", replan_every=5.0, echo=False)
    assert summary["requests_sent"] >= 10 and summary["requests_ok"] == summary["requests_sent"]
    plans = [e for e in read_events(tmp_path) if e["kind"] == "plan"]
    used = {s["variant"] for e in plans for g in e["plan"]["gpus"] for s in g["slices"] if s["variant"]}
    assert used and used <= {"b0", "b1"}  # the two smallest, which run in real time on a CPU
    assert 76.0 < summary["accuracy"] < 79.0
