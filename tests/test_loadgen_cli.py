"""`loadgen run` end to end through the command line: exit codes, table, JSON file, input errors."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from loadgen.cli import main
from tests.loadgen_fake_server import Action, FakeInferServer


def test_run_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "res" / "load.json"
    with FakeInferServer([Action("ok", "yolo11n"), Action("503")]) as server:
        rc = main(["run", "--rate", "30", "--duration", "1s", "--url", server.url, "--seed", "1",
                   "--json", str(out), "--no-progress"])
    assert rc == 0  # server errors are reported, not an exit failure
    doc = json.loads(out.read_text())
    assert doc["sent"] == server.tally.received and doc["ok"] == server.tally.answered["ok"]
    assert doc["errors"] == {"http_503": server.tally.answered["503"]}
    assert doc["variants"] == {"yolo11n": doc["ok"]}
    assert doc["service"] == "yolo" and doc["duration_s"] == 1.0
    table = capsys.readouterr().out
    for label in ("sent", "error http_503", "p99.9 latency / service time of ok (ms)", "variant yolo11n",
                  "dropped_client_side"):
        assert label in table


def test_rate_trace_and_user_images_with_progress(tmp_path, capsys):
    trace = tmp_path / "rate.csv"
    trace.write_text("t_s,rate_rps\n0,40\n0.5,0\n")
    images = tmp_path / "imgs"
    images.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 90, 0)).save(buf, format="PNG")
    (images / "x.png").write_bytes(buf.getvalue())
    out = tmp_path / "load.json"
    with FakeInferServer([Action("ok", "b0")]) as server:
        rc = main(["run", "--rate-trace", str(trace), "--duration", "1", "--service", "efficientnet",
                   "--payloads", str(images), "--url", server.url, "--json", str(out), "--seed", "2"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["requested_rate_rps"] == pytest.approx(20.0)
    assert 3 <= doc["ok"] == server.tally.received < 60
    assert set(server.tally.content_types) == {"image/png"} and server.tally.bad_bodies == []


def test_bundled_timestamp_trace_scaled_in_rate_and_time(tmp_path):
    from loadgen.arrivals import load_rate_trace

    out = tmp_path / "load.json"
    with FakeInferServer([Action("ok", "b0")]) as server:
        rc = main(["run", "--rate-trace", "azure_llm_2023_code", "--rate-scale", "4", "--time-scale", "0.05",
                   "--duration", "2", "--service", "efficientnet", "--url", server.url, "--json", str(out),
                   "--seed", "3", "--no-progress"])
    assert rc == 0
    doc = json.loads(out.read_text())
    expected = load_rate_trace("azure_llm_2023_code", 4.0, 0.05).mean_rate(2.0)
    assert doc["requested_rate_rps"] == pytest.approx(expected)
    assert doc["sent"] == server.tally.received > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "5", "--payloads", "EMPTY"], "no .jpg/.jpeg/.png files in this folder"),
        (["--rate-trace", "BADTRACE"], "bad.csv: line 3: t_s and rate_rps must be numbers"),
        (["--rate", "5", "--url", "ftp://127.0.0.1:1"], "expected http://HOST:PORT"),
        (["--rate", "5", "--service", "albert", "--payloads", "EMPTY"], "albert takes a SQuAD-style JSON file"),
    ],
)
def test_unusable_input_exits_2_with_message(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("t_s,rate_rps\n0,5\n1,lots\n")
    subst = {"EMPTY": str(tmp_path / "empty"), "BADTRACE": str(tmp_path / "bad.csv")}
    rc = main(["run", "--duration", "1", "--no-progress", *[subst.get(a, a) for a in extra]])
    assert rc == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rate", "5", "--duration", "soon"],
        ["run", "--rate", "-1", "--duration", "1"],
        ["run", "--duration", "1"],  # neither --rate nor --rate-trace
        ["run", "--rate", "5", "--rate-trace", "x.csv", "--duration", "1"],
        ["run", "--rate", "5", "--duration", "1", "--service", "bert"],
        ["run", "--rate", "5", "--duration", "1", "--concurrency", "0"],
    ],
)
def test_bad_arguments_are_usage_errors(argv, capsys):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_duration_units():
    from loadgen.run_cmd import parse_duration
    assert [parse_duration(s) for s in ("90", "90s", "2m", "1.5h")] == [90.0, 90.0, 120.0, 5400.0]
