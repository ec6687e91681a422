"""docs/grafana/clover.json queries only metrics that exist: Clover's (from a real render) and the
Ray Serve ones Ray's own dashboard uses; it has the panels docs/metrics.md promises."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from controller.accounting.metrics import render_metrics
from tests.test_metrics import _accounting, _serving

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "clover.json"
NAME = re.compile(r"\b((?:clover|ray_serve)_[a-z0-9_]+)")


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p["targets"]] + \
        [a["expr"] for a in dash["annotations"]["list"]]


def test_every_clover_metric_the_dashboard_queries_is_rendered():
    snap, _ = _accounting()
    rendered = {s.name for f in text_string_to_metric_families(render_metrics(_serving(), snap).decode())
                for s in f.samples}
    used = {n for e in _exprs(_dashboard()) for n in NAME.findall(e) if n.startswith("clover_")}
    assert len(used) >= 12 and used - rendered == set()


def test_ray_serve_metrics_are_the_ones_rays_own_dashboard_uses():
    spec = importlib.util.find_spec("ray.dashboard.modules.metrics.dashboards.serve_dashboard_panels")
    ray_names = set(NAME.findall(Path(spec.origin).read_text()))
    used = {n for e in _exprs(_dashboard()) for n in NAME.findall(e) if n.startswith("ray_serve_")}
    assert used and used - ray_names == set()


def test_panels_promised_by_the_docs():
    dash = _dashboard()
    by_type = {(p["type"], " ".join(t["expr"] for t in p["targets"])) for p in dash["panels"]}
    assert any(t == "heatmap" and "clover_slice_duration_seconds_bucket" in e for t, e in by_type)
    exprs = " ".join(_exprs(dash))
    for needle in ("clover_carbon_intensity_gco2_per_kwh", "clover_baseline_carbon_grams_total",
                   "clover_energy_joules_total", "clover_sla_seconds"):
        assert needle in exprs, needle
    annotations = " ".join(a["expr"] for a in dash["annotations"]["list"])
    assert "clover_mig_layout_changes_total" in annotations and "clover_variant_swaps_total" in annotations
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = [(x, y) for p in dash["panels"] for g in [p["gridPos"]]
             for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])]
    assert len(cells) == len(set(cells)), "panels overlap"
