"""Coordinated omission and the per-second timeline, over real HTTP (tests/loadgen_fake_server.py)."""
from __future__ import annotations

import csv
import time

from PIL import Image

from loadgen.arrivals import RateTrace
from loadgen.cli import main
from loadgen.generator import run_load_sync
from loadgen.payloads import synthetic_images
from loadgen.timeline import write_timeline
from tests.loadgen_fake_server import Action, FakeInferServer

IMAGES = synthetic_images(2, seed=0)
STALL_S = 0.6


def test_a_stalled_client_charges_the_wait_to_latency_not_to_service_time():
    """The event loop freezes once for 0.6 s (as under GC or CPU contention): requests due meanwhile go
    out late. Measured from their scheduled send, each carries its wait (latency - service time =
    send lag, up to the whole stall); measured from the actual send (the old figure), none does."""
    stalled = []

    def freeze_once(elapsed_s: float, _stats) -> None:
        if elapsed_s > 0.5 and not stalled:
            stalled.append(elapsed_s)
            time.sleep(STALL_S)  # blocks the generator's event loop

    with FakeInferServer([Action("ok", "a", 0.005)]) as server:
        result = run_load_sync(server.url, "yolo", RateTrace.constant(50), 3.0, IMAGES, seed=11,
                               on_progress=freeze_once)
    assert stalled and result.ok == server.tally.received > 100
    lat, svc = result.latency_ms, result.service_time_ms
    assert lat["max"] >= 0.6 * STALL_S * 1000 and result.max_send_lag_ms >= 0.6 * STALL_S * 1000
    # ~30 requests fell in the stall, late by 0.3 s on average: ~60 ms more per request over ~150
    assert lat["mean"] - svc["mean"] >= 0.05 * STALL_S * 1000
    assert all(lat[k] >= svc[k] - 1e-6 for k in ("min", "p50", "p99", "max"))
    stalled_second = result.timeline[int(stalled[0])]  # the freeze began in this second: its requests waited
    assert stalled_second.p95_ms >= 0.5 * STALL_S * 1000


def test_timeline_csv_and_plot_add_up_to_the_run(tmp_path):
    with FakeInferServer([Action("ok", "a"), Action("ok", "a"), Action("503")]) as server:
        result = run_load_sync(server.url, "yolo", RateTrace.constant(40), 3.0, IMAGES, seed=12)
    csv_path, png = write_timeline(result, tmp_path / "t" / "timeline.csv", sla_ms=40.0)
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["second"]) for r in rows] == [0, 1, 2]
    assert sum(int(r["sent"]) for r in rows) == result.sent == server.tally.received
    assert sum(int(r["ok"]) for r in rows) == result.ok == server.tally.answered["ok"]
    assert sum(int(r["errors_http_503"]) for r in rows) == server.tally.answered["503"] > 0
    assert all(int(r["offered"]) == int(r["sent"]) + int(r["dropped_client_side"]) for r in rows)
    assert all(float(r["p95_ms"]) > 0 for r in rows)
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 300


def test_loadgen_run_timeline_flag(tmp_path, capsys):
    out = tmp_path / "tl.csv"
    with FakeInferServer([Action("ok", "a")]) as server:
        rc = main(["run", "--rate", "20", "--duration", "2s", "--url", server.url, "--seed", "3", "--no-progress",
                   "--timeline", str(out), "--sla-ms", "50"])
    assert rc == 0 and out.exists() and out.with_suffix(".png").exists()
    assert f"timeline: {out}" in capsys.readouterr().out
    assert main(["run", "--rate", "20", "--duration", "1s", "--no-progress", "--timeline",
                 str(tmp_path / "tl.png")]) == 2
    assert "give a .csv file name" in capsys.readouterr().err
