"""One log: console via rich at --log-level, WARNING+ from any module into run.log as one line each."""
from __future__ import annotations

import io
import json
import logging
import warnings
from datetime import datetime, timezone

import pytest
from rich.console import Console

from configs.logsetup import setup_logging
from controller.accounting.runlog import RunLog, read_events
from controller.carbon.base import CachedSource, CarbonReading, CarbonSourceError


@pytest.fixture
def console():
    buf = io.StringIO()
    yield Console(file=buf, width=200), buf
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_clover_handler", False)]:
        root.removeHandler(h)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)


def _lines(run_dir) -> list[str]:
    return (run_dir / "run.log").read_text().splitlines()


def test_warnings_from_any_module_become_one_line_events(tmp_path, console, capsys):
    con, buf = console
    runlog = RunLog(tmp_path, echo=True)
    setup_logging("info", runlog=runlog, console=con)
    logging.getLogger("some.library").warning("disk nearly full\nsecond line")
    logging.getLogger("controller.x").info("planning without forecast")  # console only
    assert len(_lines(tmp_path)) == 1
    line = _lines(tmp_path)[0]
    assert " warning " in line and "disk nearly full | second line" in line and "logger=some.library" in line
    (ev,) = read_events(tmp_path, "warning")
    assert ev["logger"] == "some.library" and ev["message"] == "disk nearly full | second line"
    shown = buf.getvalue()
    assert "disk nearly full" in shown and "planning without forecast" in shown
    assert "disk nearly full" not in capsys.readouterr().out  # the run log's echo does not print it twice


def test_an_exception_is_one_line_in_run_log_and_its_traceback_in_run_jsonl(tmp_path, console):
    setup_logging("info", runlog=RunLog(tmp_path), console=console[0])
    divisor = 0
    try:
        print(1 / divisor)
    except ZeroDivisionError:
        logging.getLogger("controller.loop").exception("tick failed")
    (line,) = _lines(tmp_path)
    assert " error " in line and "tick failed" in line and "ZeroDivisionError: division by zero" in line
    assert "Traceback" not in line
    (ev,) = read_events(tmp_path, "error")
    assert "Traceback (most recent call last)" in ev["traceback"] and "1 / divisor" in ev["traceback"]


def test_the_stale_carbon_warning_reaches_run_log(tmp_path, console):
    class Flaky(CachedSource):
        name = "flaky"
        calls = 0

        def _fetch_current(self) -> CarbonReading:
            self.calls += 1
            if self.calls > 1:
                raise CarbonSourceError("HTTP 503 from the grid API")
            return CarbonReading(250.0, datetime(2024, 1, 1, tzinfo=timezone.utc), self.name)

    setup_logging("warning", runlog=RunLog(tmp_path), console=console[0])
    source = Flaky(min_refresh_s=0.0)
    source.current()
    assert source.current().stale
    (ev,) = read_events(tmp_path, "warning")
    assert "HTTP 503" in ev["message"] and "stale" in ev["message"] and ev["logger"] == "controller.carbon.base"


def test_python_warnings_are_captured(tmp_path, console):
    setup_logging("info", runlog=RunLog(tmp_path), console=console[0])
    warnings.warn("this API is deprecated", DeprecationWarning, stacklevel=1)
    assert any("this API is deprecated" in e["message"] for e in read_events(tmp_path, "warning"))


def test_log_level_filters_the_console_and_setup_is_idempotent(tmp_path, console):
    con, buf = console
    setup_logging("error", console=con)
    setup_logging("error", runlog=RunLog(tmp_path), console=con)
    setup_logging("error", runlog=RunLog(tmp_path), console=con)
    logging.getLogger("x").warning("only in run.log")
    logging.getLogger("x").error("everywhere")
    assert "only in run.log" not in buf.getvalue() and buf.getvalue().count("everywhere") == 1
    assert [e["message"] for e in read_events(tmp_path) if e["kind"] in ("warning", "error")] == \
        ["only in run.log", "everywhere"]
    with pytest.raises(ValueError, match="use one of"):
        setup_logging("verbose")


def test_run_log_events_are_single_lines_whatever_their_fields(tmp_path):
    log = RunLog(tmp_path)
    log.event("error", "rollback failed:\nTraceback ...\n  File x", where="apply", error="line1\nline2",
              plan={"big": list(range(50))})
    (line,) = _lines(tmp_path)
    assert "rollback failed: | Traceback ... | File x" in line and "error=line1 | line2" in line and "big" not in line
    assert json.loads((tmp_path / "run.jsonl").read_text())["plan"]["big"][-1] == 49
