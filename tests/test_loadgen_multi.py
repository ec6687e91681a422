"""Several services at once: `/v1/{service}/infer`, each at its own rate, reported per service and
in total. Against a real HTTP server on 127.0.0.1 (tests/loadgen_fake_server.py) whose own
per-path tallies the generator's counts are compared with; rates get loose statistical bounds."""
from __future__ import annotations

import csv
import json
import math

import pytest

from loadgen.arrivals import RateTrace
from loadgen.cli import main
from loadgen.generator import run_load_sync, run_multi_load_sync
from loadgen.results import LoadResult, LoadStats, MultiLoadResult
from tests.loadgen_fake_server import Action, FakeInferServer

SQUAD = {"data": [{"paragraphs": [{"context": "The bridge of Graz was completed in 1890.",
                                   "qas": [{"question": "When was the bridge of Graz completed?"}]}]}]}


def _near(count: int, expected: float) -> bool:
    return abs(count - expected) < 5 * math.sqrt(expected) + 2


def test_each_service_gets_its_own_path_rate_and_payload_kind():
    scripts = {"yolo": [Action("ok", "yolo11n")], "albert": [Action("ok", "base")]}
    with FakeInferServer([Action("400")], services=scripts) as server:
        result = run_multi_load_sync(server.url, {"yolo": 60.0, "albert": RateTrace.constant(20)}, 2.0, seed=1)
    yolo, albert = result.services["yolo"], result.services["albert"]
    assert set(server.tallies) == {"yolo", "albert"}  # nothing went to /v1/infer
    assert yolo.ok == yolo.sent == server.tallies["yolo"].received and _near(yolo.offered, 120)
    assert albert.ok == albert.sent == server.tallies["albert"].received and _near(albert.offered, 40)
    assert set(server.tallies["yolo"].content_types) == {"image/jpeg"}
    assert set(server.tallies["albert"].content_types) == {"application/json"}
    assert server.tally.bad_bodies == []
    assert (yolo.requested_rate_rps, albert.requested_rate_rps, result.total.requested_rate_rps) == (60, 20, 80)
    total = result.total
    assert total.service == "yolo,albert" and total.sent == yolo.sent + albert.sent == server.tally.received
    assert total.variants == {"base": albert.ok, "yolo11n": yolo.ok}
    assert total.concurrency == 2 * yolo.concurrency


def test_outcomes_latencies_and_timelines_are_kept_apart_per_service():
    scripts = {"yolo": [Action("ok", "yolo11n", 0.005), Action("503")],
               "albert": [Action("ok", "large", 0.120)]}
    with FakeInferServer([Action("ok")], services=scripts) as server:
        result = run_multi_load_sync(server.url, {"yolo": 40.0, "albert": 15.0}, 2.0, seed=2)
    yolo, albert, total = result.services["yolo"], result.services["albert"], result.total
    assert yolo.errors == {"http_503": server.tallies["yolo"].answered["503"]} and yolo.errors["http_503"] > 10
    assert yolo.retry_after_seen == yolo.errors["http_503"] and albert.retry_after_seen == 0
    assert albert.errors == {} and albert.ok == server.tallies["albert"].answered["ok"]
    assert total.errors == yolo.errors and total.ok == yolo.ok + albert.ok
    # albert's server sleeps 120 ms per request, yolo's 5 ms (bounds loose: a busy 2-core box adds lag to both)
    assert yolo.latency_ms["min"] < 120 <= albert.latency_ms["min"]
    assert yolo.latency_ms["p50"] < albert.latency_ms["p50"]
    assert total.latency_ms["min"] == yolo.latency_ms["min"] and total.latency_ms["max"] == albert.latency_ms["max"]
    for r in (yolo, albert, total):
        assert sum(row.sent for row in r.timeline) == r.sent and sum(row.ok for row in r.timeline) == r.ok
    assert [row.sent for row in total.timeline] == [a.sent + b.sent for a, b in zip(yolo.timeline, albert.timeline)]


def test_a_slow_service_fills_only_its_own_slots():
    # albert answers in 1 s, so its 3 slots are full from its third arrival to about 1 s and the rest of its
    # arrivals are dropped client-side; yolo answers at once and keeps its own 3 slots (with one
    # bound shared by both, albert would hold it and yolo would be dropped as much)
    scripts = {"yolo": [Action("ok", "a")], "albert": [Action("ok", "b", 1.0)]}
    with FakeInferServer([Action("ok")], services=scripts) as server:
        result = run_multi_load_sync(server.url, {"yolo": 20.0, "albert": 40.0}, 1.5, concurrency=3, seed=3)
    yolo, albert = result.services["yolo"], result.services["albert"]
    assert albert.max_in_flight == 3 and albert.sent <= 6 and albert.dropped_client_side > 30  # two rounds at most
    assert yolo.sent > 0.5 * yolo.offered and yolo.ok == yolo.sent == server.tallies["yolo"].received
    assert yolo.max_in_flight <= 3 and result.total.max_in_flight <= 6


def test_a_service_the_ingress_does_not_serve_is_a_404_listing_the_served_ones():
    with FakeInferServer([Action("ok")], services={"yolo": [Action("ok", "a")]}) as server:
        result = run_multi_load_sync(server.url, {"yolo": 20.0, "efficientnet": 20.0}, 1.0, seed=4)
    effnet = result.services["efficientnet"]
    assert effnet.ok == 0 and effnet.errors == {"http_404": effnet.sent} and effnet.sent > 5
    assert "served: ['yolo']" in effnet.error_examples["http_404"]
    assert result.services["yolo"].failed == 0


def test_rate_traces_per_service_and_schedules_independent_of_the_other_services():
    yolo_trace = RateTrace((0.0, 1.0), (50.0, 0.0))  # one busy second, then silence
    with FakeInferServer([Action("ok", "a")]) as server:
        both = run_multi_load_sync(server.url, {"yolo": yolo_trace, "albert": 10.0}, 2.0, seed=5)
        alone = run_multi_load_sync(server.url, {"yolo": yolo_trace}, 2.0, seed=5)
    rows = both.services["yolo"].timeline
    assert rows[0].offered > 20 and rows[1].offered == 0
    assert both.services["yolo"].requested_rate_rps == 25.0
    assert [r.offered for r in alone.services["yolo"].timeline] == [r.offered for r in rows]


def test_the_one_service_form_still_posts_to_v1_infer():
    with FakeInferServer([Action("ok", "a")], services={"yolo": [Action("503")]}) as server:
        result = run_load_sync(server.url, "yolo", 20.0, 1.0, seed=6)
    assert set(server.tallies) == {""} and result.ok == server.tallies[""].received > 5


def test_total_stats_record_what_every_service_records():
    total = LoadStats()
    yolo, albert = LoadStats(parent=total), LoadStats(parent=total)
    yolo.record_send(0, 0.001)
    albert.record_send(0, 0.003)
    albert.record_drop(1)
    assert total.in_flight == 2 and total.max_in_flight == 2 and total.max_send_lag_ms == pytest.approx(3.0)
    yolo.record_ok(0, 10.0, 5.0, "yolo11n")
    albert.record_error(0, "http_503", "busy", retry_after=True)
    assert (total.offered, total.sent, total.ok, total.failed, total.dropped_client_side) == (3, 2, 1, 1, 1)
    assert total.in_flight == 0 and total.retry_after_seen == 1 and total.error_examples == {"http_503": "busy"}
    common = {"url": "u", "duration_s": 2.0, "elapsed_s": 2.0, "concurrency": 1, "timeout_s": 1.0, "requested_rate_rps": 1.0}
    result = MultiLoadResult(services={"yolo": LoadResult.from_stats(yolo, service="yolo", **common),
                                       "albert": LoadResult.from_stats(albert, service="albert", **common)},
                             total=LoadResult.from_stats(total, service="yolo,albert", **common))
    doc = result.to_json()
    assert doc["service"] == "yolo,albert" and doc["sent"] == 2 and doc["errors"] == {"http_503": 1}
    assert doc["services"]["yolo"]["variants"] == {"yolo11n": 1} and doc["services"]["albert"]["failed"] == 1


def test_cli_loads_two_services_and_writes_json_table_and_timelines(tmp_path, capsys):
    out, timeline = tmp_path / "load.json", tmp_path / "tl" / "timeline.csv"
    scripts = {"yolo": [Action("ok", "yolo11n"), Action("503")], "albert": [Action("ok", "base")]}
    with FakeInferServer([Action("400")], services=scripts) as server:
        rc = main(["run", "--service", "yolo=30,albert=10", "--duration", "1s", "--url", server.url, "--seed", "7",
                   "--json", str(out), "--timeline", str(timeline), "--sla-ms", "yolo=60,albert=120", "--no-progress"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["service"] == "yolo,albert" and doc["sent"] == server.tally.received
    for name in ("yolo", "albert"):
        tally, part = server.tallies[name], doc["services"][name]
        assert part["sent"] == tally.received and part["ok"] == tally.answered["ok"]
    assert doc["services"]["yolo"]["errors"] == {"http_503": server.tallies["yolo"].answered["503"]}
    assert doc["services"]["albert"]["requested_rate_rps"] == 10.0 and doc["requested_rate_rps"] == 40.0
    table = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.split()}
    assert lines["yolo"][:4] == ["30.00", str(doc["services"]["yolo"]["sent"]), str(doc["services"]["yolo"]["ok"]),
                                 str(doc["services"]["yolo"]["failed"])]
    assert lines["total"][:2] == ["40.00", str(doc["sent"])] and "p95" in table
    assert lines["http_503"] == [str(doc["errors"]["http_503"])] and lines["base"] == [str(doc["variants"]["base"])]
    for name, part in (("timeline", doc), ("timeline-yolo", doc["services"]["yolo"]),
                       ("timeline-albert", doc["services"]["albert"])):
        with (tmp_path / "tl" / f"{name}.csv").open() as f:
            assert sum(int(row["sent"]) for row in csv.DictReader(f)) == part["sent"]
        assert (tmp_path / "tl" / f"{name}.png").stat().st_size > 0


def test_cli_per_service_rate_trace_and_payloads(tmp_path):
    trace, squad, out = tmp_path / "albert.csv", tmp_path / "squad.json", tmp_path / "load.json"
    trace.write_text("t_s,rate_rps\n0,20\n0.5,0\n")
    squad.write_text(json.dumps(SQUAD))
    with FakeInferServer([Action("ok", "x")]) as server:
        rc = main(["run", "--service", "yolo,albert", "--rate", "yolo=10", "--rate-trace", f"albert={trace}",
                   "--payloads", f"albert={squad}", "--duration", "1", "--url", server.url, "--json", str(out),
                   "--no-progress", "--seed", "8"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["services"]["albert"]["requested_rate_rps"] == pytest.approx(10.0)
    assert doc["services"]["yolo"]["requested_rate_rps"] == 10.0
    assert server.tallies["albert"].content_types == {"application/json": doc["services"]["albert"]["sent"]}
    assert server.tally.bad_bodies == []


@pytest.mark.parametrize(("extra", "message"), [
    (["--service", "yolo=abc"], "--service 'yolo=abc': 'abc' is not a number"),
    (["--service", "yolo=0"], "--service 'yolo=0': expected a number > 0"),
    (["--service", "yolo,albert=3,yolo"], "--service 'yolo,albert=3,yolo': service 'yolo' named twice"),
    (["--service", "yolo=3,resnet=4"], "unknown service 'resnet'; configured services: albert, efficientnet, yolo"),
    (["--service", "yolo,albert", "--rate", "yolo=3"], "no rate for 'albert': give --service albert=R"),
    (["--service", "yolo=3", "--rate", "yolo=4"], "'yolo' is given 2 rates (--service 'yolo=3' and --rate 'yolo=4')"),
    (["--service", "yolo", "--rate", "3", "--rate-trace", "TRACE"], "'yolo' is given 2 rates"),
    (["--service", "yolo=3", "--rate", "albert=4"], "--rate 'albert=4': 'albert' is not served (served: yolo)"),
    (["--service", "yolo", "--rate-trace", "yolo=BAD"], "bad.csv: line 3: t_s and rate_rps must be numbers"),
    (["--service", "yolo=3,albert=2", "--sla-ms", "albert=x"], "--sla-ms 'albert=x': 'x' is not a number"),
    (["--service", "yolo=3,albert=2", "--payloads", "albert=EMPTY"], "albert takes a SQuAD-style JSON file"),
])
def test_cli_malformed_per_service_flags_exit_2_naming_the_token(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("t_s,rate_rps\n0,5\n1,lots\n")
    (tmp_path / "ok.csv").write_text("t_s,rate_rps\n0,5\n")
    subst = {"EMPTY": str(tmp_path / "empty"), "BAD": str(tmp_path / "bad.csv"), "TRACE": str(tmp_path / "ok.csv")}
    argv = [next((a.replace(k, v) for k, v in subst.items() if k in a), a) for a in extra]
    assert main(["run", "--duration", "1", "--no-progress", "--url", "http://127.0.0.1:1", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
