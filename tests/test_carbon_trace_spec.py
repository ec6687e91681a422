"""Trace replay, constant source, spec parsing and `controller carbon`."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from controller.carbon.base import CarbonSourceError
from controller.carbon.constant import ConstantSource
from controller.carbon.spec import make_source
from controller.carbon.trace import load_trace
from controller.carbon.trace_source import TraceSource
from controller.cli import main
from tests.carbon_fixture_server import FixtureServer, Route
from tests.fake_nvml import FakeClock


def _csv(tmp_path, values):
    p = tmp_path / "tiny.csv"
    rows = [f"2024-01-01T{h:02d}:00:00Z,{v}" for h, v in enumerate(values)]
    p.write_text("timestamp,carbon_intensity_gco2_per_kwh\n" + "\n".join(rows) + "\n")
    return p


def test_trace_replay_is_time_scaled_and_loops(tmp_path):
    clock = FakeClock()
    src = make_source(f"trace:{_csv(tmp_path, [100, 200, 300])}", time_scale=3600, clock=clock)
    assert src.current().value_gco2_per_kwh == 100
    clock.advance(1.5)  # 1.5 trace hours
    r = src.current()
    assert r.value_gco2_per_kwh == 200 and r.timestamp == datetime(2024, 1, 1, 1, 30, tzinfo=timezone.utc)
    clock.advance(1.5)  # 3 h: past the last row, starts over
    assert src.current().value_gco2_per_kwh == 100
    assert [x.value_gco2_per_kwh for x in src.forecast(4)] == [100, 200, 300, 100]


def test_trace_start_offset_and_bundled_name():
    clock = FakeClock()
    src = TraceSource("emaps_de_2023", start_offset_h=3, clock=clock)
    assert src.name == "trace:emaps_de_2023"
    assert src.current().value_gco2_per_kwh == load_trace("emaps_de_2023").values[3]


def test_trace_at_without_loop_holds_the_last_value(tmp_path):
    tr = load_trace(_csv(tmp_path, [1, 2]))
    assert tr.at(10 * 3600, loop=False)[1] == 2
    assert tr.at(10 * 3600)[1] == 1


def test_constant_source():
    src = make_source("constant:250")
    assert isinstance(src, ConstantSource) and src.current().value_gco2_per_kwh == 250
    assert [r.value_gco2_per_kwh for r in src.forecast(3)] == [250, 250, 250]


@pytest.mark.parametrize("spec, msg", [
    ("nope:1", "unknown carbon source"),
    ("constant:abc", "needs a number"),
    ("constant:-5", "must be >= 0"),
    ("trace:", "needs a value"),
    ("trace:missing_trace", "not found"),
    ("uk:99", "unknown region"),
    ("watttime:CAISO_NORTH", "WATTTIME_USERNAME"),
])
def test_bad_specs_explain_themselves(spec, msg, monkeypatch):
    monkeypatch.delenv("WATTTIME_USERNAME", raising=False)
    with pytest.raises(CarbonSourceError, match=msg):
        make_source(spec)


def test_base_url_only_for_http_sources():
    with pytest.raises(CarbonSourceError, match="--base-url applies only"):
        make_source("trace:emaps_de_2023", "http://127.0.0.1:1")


def test_cli_json(capsys):
    assert main(["carbon", "--source", "constant:250", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"value_gco2_per_kwh", "timestamp", "source", "stale"}
    assert out["value_gco2_per_kwh"] == 250 and out["source"] == "constant:250" and out["stale"] is False


def test_cli_against_a_local_api(capsys):
    srv = FixtureServer({"/intensity": Route("uk_intensity.json")})
    try:
        assert main(["carbon", "--source", "uk", "--base-url", srv.url]) == 0
        assert "141.0 gCO2/kWh at 2024-05-14T09:00:00+00:00 from uk" in capsys.readouterr().out
        srv.fail("/intensity", "500")
        assert main(["carbon", "--source", "uk", "--base-url", srv.url, "--json"]) == 1
        assert "server error" in capsys.readouterr().err
    finally:
        srv.close()
