"""run.log and its JSON-lines twin run.jsonl: one line per controller event.

Every component that records something a user reads afterwards calls `RunLog.event`; the
report (controller/accounting/report.py) and tests read `run.jsonl`. Event kinds and their fields are
listed in docs/DESIGN.md ("run.log events").

run.log holds exactly one line per event (multi-line messages and values are joined with ' | ')
so that `grep`/`tail` work on it; bulky fields (`plan`, `traceback`) go only to run.jsonl.
Python logging reaches it through configs/logsetup.py (WARNING and above become events).
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from configs.logsetup import one_line

# Field names never written to the log (values may be secrets).
_REDACT = ("token", "secret", "password", "api_key", "auth")
# Fields kept out of the text line (too big for one line); run.jsonl has them.
_JSON_ONLY = ("plan", "traceback")


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if any(r in k.lower() for r in _REDACT) else v) for k, v in fields.items()}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, separators=(",", ":"), default=str)
    return one_line(str(v))


class RunLog:
    """Append-only event log in a run directory; safe to call from several threads."""

    def __init__(self, run_dir: str | Path, *, echo: bool = False) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.text_path = self.dir / "run.log"
        self.json_path = self.dir / "run.jsonl"
        self._lock = threading.Lock()
        self._echo = echo

    def event(self, kind: str, message: str = "", *, echo: bool = True, **fields: Any) -> dict[str, Any]:
        """Record one event. `message` is the human sentence; `fields` the machine-readable data.

        `echo=False` keeps it off stdout even when the log echoes (the logging handler's events,
        which the console handler already printed).
        """
        now = time.time()
        rec = {"ts": now, "kind": kind, "message": message, **_clean(fields)}
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        extras = " ".join(f"{k}={_fmt(v)}" for k, v in _clean(fields).items() if k not in _JSON_ONLY)
        line = f"{stamp} {kind:<10} {one_line(message)}" + (f" | {extras}" if extras else "")
        with self._lock:
            with self.text_path.open("a") as f:
                f.write(line + "\n")
            with self.json_path.open("a") as f:
                f.write(json.dumps(rec, default=str) + "\n")
        if self._echo and echo:
            print(line, flush=True)
        return rec


def read_events(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """All events of a run directory (optionally of one kind), in order."""
    path = Path(run_dir) / "run.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if kind is None or rec.get("kind") == kind:
                out.append(rec)
    return out
