"""Electricity Maps, WattTime and carbonintensity.org.uk against recorded-shape fixtures on 127.0.0.1."""
from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone

import pytest

from controller.carbon.base import CarbonSourceError
from controller.carbon.spec import make_source
from controller.carbon.watttime import LBS_PER_MWH_TO_G_PER_KWH
from tests.carbon_fixture_server import FixtureServer, Route
from tests.fake_nvml import FakeClock

EM_KEY = "em-secret-key-5f1c9a"
WT_USER, WT_PASSWORD = "clover-user", "wt-secret-pw-77d0"
T0 = datetime(2024, 5, 14, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def server():
    srv = FixtureServer({
        "/v3/carbon-intensity/latest": Route("electricitymaps_latest_DE.json"),
        "/v3/carbon-intensity/history": Route("electricitymaps_history_DE.json"),
        "/v3/carbon-intensity/forecast": Route("electricitymaps_forecast_DE.json"),
        "/login": Route("watttime_login.json"),
        "/v3/forecast": Route("watttime_forecast_CAISO_NORTH.json"),
        "/v3/historical": Route("watttime_historical_CAISO_NORTH.json"),
        "/intensity/": Route("uk_intensity_fw24h.json"),
        "/intensity": Route("uk_intensity.json"),
        "/regional/intensity/": Route("uk_regional_fw24h_regionid_13.json"),
        "/regional/regionid/13": Route("uk_regional_regionid_13.json"),
    }, delay_s=0.6)
    yield srv
    srv.close()


# spec, base-url suffix, the route current() reads, expected value
PROVIDERS = {
    "electricitymaps": ("electricitymaps:DE", "/v3", "/v3/carbon-intensity/latest", 302.0),
    "watttime": ("watttime:CAISO_NORTH", "", "/v3/forecast", 812.0 * LBS_PER_MWH_TO_G_PER_KWH),
    "uk": ("uk", "", "/intensity", 141.0),
    "uk-region": ("uk:13", "", "/regional/regionid/13", 163.0),
}


def _source(server, which: str, **kw):
    spec, suffix, _, _ = PROVIDERS[which]
    return make_source(spec, server.url + suffix, api_key=EM_KEY, username=WT_USER, password=WT_PASSWORD,
                       timeout_s=0.3, min_refresh_s=0, **kw)


@pytest.mark.parametrize("which", list(PROVIDERS))
def test_current_reads_the_documented_shape(server, which):
    r = _source(server, which).current()
    assert r.value_gco2_per_kwh == pytest.approx(PROVIDERS[which][3])
    assert r.timestamp == T0 and not r.stale and r.source == PROVIDERS[which][0]


FAILURES = {
    "timeout": "no answer",
    "401": "refused the credentials",
    "429": "rate limited",
    "500": "server error",
    "malformed": "malformed JSON",
}


@pytest.mark.parametrize("kind", list(FAILURES))
@pytest.mark.parametrize("which", list(PROVIDERS))
def test_failure_before_any_good_value_is_a_clear_error(server, which, kind):
    server.fail(PROVIDERS[which][2], kind)
    with pytest.raises(CarbonSourceError, match=FAILURES[kind]) as exc:
        _source(server, which).current()
    assert EM_KEY not in str(exc.value) and WT_PASSWORD not in str(exc.value)


@pytest.mark.parametrize("kind", list(FAILURES))
@pytest.mark.parametrize("which", list(PROVIDERS))
def test_failure_after_a_good_value_keeps_it_stale_and_warns(server, which, kind, caplog):
    source = _source(server, which)
    good = source.current()
    server.fail(PROVIDERS[which][2], kind)
    with caplog.at_level(logging.DEBUG):
        again = source.current()
    assert again.stale and again.value_gco2_per_kwh == good.value_gco2_per_kwh
    assert "keeping the last good value" in caplog.text and FAILURES[kind] in caplog.text
    for secret in (EM_KEY, WT_PASSWORD, base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()):
        assert secret not in caplog.text
    server.fail(PROVIDERS[which][2], None)
    assert not source.current().stale  # recovers on the next good answer


def test_electricitymaps_sends_the_key_in_auth_token_header(server):
    src = _source(server, "electricitymaps")
    src.current()
    req = server.requests[-1]
    assert req["headers"]["auth-token"] == EM_KEY and "zone=DE" in req["path"]
    assert EM_KEY not in req["path"]


def test_electricitymaps_history_and_forecast(server):
    src = _source(server, "electricitymaps")
    hist = src.history()
    assert len(hist) == 24 and hist[-1].value_gco2_per_kwh == 305 and hist[-1].timestamp == T0
    fc = src.forecast(3)
    assert [r.value_gco2_per_kwh for r in fc] == [298, 287, 270]


def test_electricitymaps_without_key_says_which_variable(monkeypatch):
    monkeypatch.delenv("ELECTRICITYMAPS_API_KEY", raising=False)
    with pytest.raises(CarbonSourceError, match="ELECTRICITYMAPS_API_KEY"):
        make_source("electricitymaps:DE")


def test_electricitymaps_key_from_environment(server, monkeypatch):
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", "from-env-key")
    make_source("electricitymaps:DE", server.url + "/v3", min_refresh_s=0).current()
    assert server.requests[-1]["headers"]["auth-token"] == "from-env-key"


def test_watttime_logs_in_with_basic_auth_and_uses_bearer(server):
    _source(server, "watttime").current()
    login, data = server.requests[0], server.requests[1]
    assert login["path"] == "/login"
    assert login["headers"]["Authorization"] == "Basic " + base64.b64encode(
        f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
    assert data["headers"]["Authorization"] == "Bearer eyJhbGciOiJIUzI1NiJ9.fixture-token-1"
    assert "signal_type=co2_moer" in data["path"] and "region=CAISO_NORTH" in data["path"]


def test_watttime_logs_in_again_on_401(server):
    src = _source(server, "watttime")
    src.current()
    server.fail("/v3/forecast", "401", times=1)
    r = src.current()
    assert not r.stale and server.count("/login") == 2


def test_watttime_renews_the_token_when_it_expires(server):
    clock = FakeClock()
    src = _source(server, "watttime", clock=clock)
    src.current()
    clock.advance(20 * 60)
    src.current()
    assert server.count("/login") == 1
    clock.advance(10 * 60)  # 30 min after login: WattTime tokens last 30 min
    src.current()
    assert server.count("/login") == 2


def test_watttime_forecast_and_history_convert_units(server):
    src = _source(server, "watttime")
    fc = src.forecast(1)
    assert len(fc) == 12 and fc[1].value_gco2_per_kwh == pytest.approx(809.5 * 0.453592)
    hist = src.history(hours=1)
    assert len(hist) == 6 and hist[0].value_gco2_per_kwh == pytest.approx(790.2 * 0.453592)


def test_uk_forecasts_national_and_regional(server):
    nat = _source(server, "uk").forecast(2)
    assert [r.value_gco2_per_kwh for r in nat] == [148, 146, 141, 137]
    reg = _source(server, "uk-region").forecast(2)
    assert [r.value_gco2_per_kwh for r in reg] == [163, 160, 155, 151]
    assert "/fw24h/regionid/13" in server.requests[-1]["path"]


def test_forecast_failure_keeps_previous_forecast_stale(server):
    src = _source(server, "electricitymaps")
    src.forecast(2)
    server.fail("/v3/carbon-intensity/forecast", "500")
    fc = src.forecast(2)
    assert [r.value_gco2_per_kwh for r in fc] == [298, 287] and all(r.stale for r in fc)


def test_min_refresh_caches_between_calls(server):
    clock = FakeClock()
    src = make_source("uk", server.url, min_refresh_s=300, clock=clock)
    src.current()
    src.current()
    assert server.count("/intensity") == 1
    clock.advance(301)
    src.current()
    assert server.count("/intensity") == 2
