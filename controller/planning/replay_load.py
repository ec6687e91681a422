"""The load a replay plays: replay settings scaled to a compressed trace, the expected rate per
bin from a rate trace with a daily envelope, and the default rate (half of Base's capacity).

Used by `controller simulate`, the benches and `controller demo`; the replay itself
(controller/planning/replay.py) only reads the resulting rate per bin.
"""
from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from controller.planning.load_forecast import ForecastParams
from controller.planning.model import slice_profiles
from controller.planning.replay import SimConfig
from loadgen.arrivals import RateTrace


def time_scaled_config(time_scale: float = 1.0, step_s: float = 3600.0, **kwargs) -> SimConfig:
    """Replay settings for a rate trace played `time_scale` times slower (<1: faster) and steps of
    `step_s`: the forecast's time constants (block, peak window, history) scale with the trace,
    so a compressed day is forecast like a real one; bands are checked four times a step."""
    if not (time_scale > 0 and step_s > 0):
        raise ValueError("the time scale and the step must be positive")
    params = ForecastParams(block_s=60.0 * time_scale, peak_window_s=600.0 * time_scale)
    bin_s = step_s / math.ceil(step_s / min(1.0, step_s / 50.0, time_scale))  # divides a step
    return SimConfig(step_s=step_s, check_s=step_s / 4.0, bin_s=bin_s, history_s=max(3600.0 * time_scale, step_s),
                     forecast=params, **kwargs)


def traffic(shape: RateTrace, start: datetime, busiest_rps: float, steps: int, config: SimConfig,
            diurnal: float | None = None, peak_hour: float = 14.0, stride: int = 1, minute_s: float = 60.0) -> np.ndarray:
    """Expected rate per `config.bin_s` over a replay of `steps` steps: `shape` (looping), times a
    daily envelope whose busiest moment is `diurnal` x its quietest, peaking at `peak_hour` on the
    carbon trace's clock (`start` = its first row; a step stands for `stride` hours), scaled so
    its busiest `minute_s` runs at `busiest_rps`."""
    duration = steps * config.step_s
    if diurnal:
        per_hour = config.step_s / stride  # simulated seconds per hour of the carbon trace
        since_midnight_h = start.hour + start.minute / 60.0
        day_s, peak_at_s = 24 * per_hour, ((peak_hour - since_midnight_h) % 24) * per_hour
        shape = shape.modulated(RateTrace.diurnal(diurnal, peak_at_s, day_s, step_s=day_s / 288), duration)
    return np.asarray(shape.with_peak(busiest_rps, duration, minute_s).binned(config.bin_s, duration))


def step_means(load: np.ndarray, steps: int) -> list[float]:
    """The mean rate of each step of a load (expected rate per bin, the bins of `steps` equal steps)."""
    return load.reshape(steps, -1).mean(axis=1).tolist()


def default_rate_rps(service, gpus, perf, fraction: float = 0.5) -> float:
    """`fraction` of Base's capacity (base variant, whole GPU, batch 1, summed over GPUs):
    Base then runs at 50 % utilisation and its p95 (the default SLA) is a sensible target."""
    return fraction * sum(
        perf.throughput_rps(service.base.profile_key, t, max(slice_profiles(t)), 1) for _, t in gpus)
