"""The control loop's two clocks: reconcile every `reconcile_every_s`, an interval (account,
re-plan) every `replan_every_s`, and at once when an operator command arrives. A failing tick is
logged and the loop goes on serving on the current plan: one bad carbon reading or timeout must
never stop the controller.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.loop.control_loop import ControlLoop

log = logging.getLogger(__name__)


def drive(loop: ControlLoop, stop: threading.Event, duration_s: float | None = None) -> None:
    """Run `loop` until `stop` is set (or for `duration_s`)."""
    t_end = time.monotonic() + duration_s if duration_s else None
    if loop.plan is None:
        loop.start()
    next_interval = time.monotonic() + loop.settings.replan_every_s
    while not stop.is_set():
        now = time.monotonic()
        if t_end is not None and now >= t_end:
            break
        wake = min(next_interval, now + loop.settings.reconcile_every_s, t_end or float("inf"))
        try:
            loop.handle(loop.bus.wait_commands(max(0.0, wake - now)))
            if stop.is_set():
                break
            if time.monotonic() >= next_interval:
                next_interval += loop.settings.replan_every_s
                loop.tick()
            else:
                loop.step_once()
        except Exception as exc:  # one bad tick (carbon API, timeout) must not stop serving
            log.exception("control-loop tick failed")
            loop.events.event("error", f"tick failed, serving on the current plan: {type(exc).__name__}: {exc}",
                              where="tick", error=str(exc))
            stop.wait(1.0)
