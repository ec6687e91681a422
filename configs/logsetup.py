"""One logging set-up for every Clover command: rich on the console, WARNING+ into run.log.

Why here (ground floor): `controller`, `gpu-node` and `loadgen` all call it (configs/cli.py does
for every sub-command, from `--log-level`), and the controller calls it once more with its run
log, so that a warning from any module — a stale carbon value, a meter that cannot be read, a
library deprecation — is an event in the run directory and not a line lost on a terminal.

`setup_logging` is idempotent: each call replaces the handlers a previous call installed and
leaves any other handler (pytest's, an embedding application's) alone.
"""
from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Protocol

from rich.console import Console
from rich.logging import RichHandler

LOG_LEVELS = ("debug", "info", "warning", "error")
# Libraries that log every request or file at INFO; quiet unless the user asks for debug.
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "asyncio", "matplotlib", "PIL", "filelock")
_MARK = "_clover_handler"


class EventSink(Protocol):
    """What the run.log handler writes to (controller/accounting/runlog.py's RunLog)."""

    def event(self, kind: str, message: str = "", *, echo: bool = True, **fields: Any) -> Any: ...


def one_line(text: str) -> str:
    """`text` on one line: its lines joined by ' | ' (run.log holds one event per line)."""
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


class RunLogHandler(logging.Handler):
    """Turns each WARNING/ERROR record into one `warning`/`error` event of a run log.

    The text line carries the message, the logger and the exception's one-line summary; the
    full traceback goes only to the JSON twin (field `traceback`). Not echoed to the console:
    the console handler already showed the record.
    """

    def __init__(self, sink: EventSink, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.sink = sink
        self._busy = threading.local()  # a sink that logs must not recurse into itself

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            fields: dict[str, Any] = {"logger": record.name, "where": f"{record.module}:{record.lineno}"}
            if record.exc_info and record.exc_info[0] is not None:
                exc_type, exc, tb = record.exc_info
                fields["error"] = one_line(f"{exc_type.__name__}: {exc}")
                fields["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb))
            kind = "error" if record.levelno >= logging.ERROR else "warning"
            self.sink.event(kind, one_line(record.getMessage()), echo=False, **fields)
        except Exception:  # noqa: BLE001 - logging must never take the program down
            self.handleError(record)
        finally:
            self._busy.on = False


def setup_logging(level: str = "info", *, runlog: EventSink | None = None, console: Console | None = None) -> None:
    """Console logging at `level` (rich, on stderr); with `runlog`, WARNING and above also become its events.

    Call it again with the run log once the run directory exists (`controller run`, `demo`).
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    console_level = getattr(logging, level.upper())
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(h)
        h.close()
    handlers: list[logging.Handler] = [
        RichHandler(level=console_level, console=console or Console(stderr=True), show_path=False,
                    rich_tracebacks=False, markup=False)]
    if runlog is not None:
        handlers.append(RunLogHandler(runlog))
    for h in handlers:
        setattr(h, _MARK, True)
        root.addHandler(h)
    root.setLevel(min(console_level, logging.WARNING) if runlog is not None else console_level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn(...) from libraries becomes a WARNING record too
