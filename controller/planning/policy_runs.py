"""Several policies replayed on the same trace and traffic, and compared with Base (carbon saving,
accuracy loss, Clover's objective): what `controller simulate` and the benches report.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from configs.units import carbon_g
from controller.planning.model import PlanningProblem
from controller.planning.objective import REFERENCE_CI, REFERENCE_PUE, clover_score
from controller.planning.plan import Plan
from controller.planning.replay import Replay, SimConfig


def add_savings(r: dict, base: dict) -> None:
    """Add carbon_saving_pct and accuracy_loss_pct against Base's summary, in place (also for a
    cluster of several services, whose objective is not one λ's: controller/planning/joint_replay.py)."""
    r["carbon_saving_pct"] = 100.0 * (base["carbon_g"] - r["carbon_g"]) / base["carbon_g"]
    r["accuracy_loss_pct"] = 100.0 * (base["accuracy"] - r["accuracy"]) / base["accuracy"]


def compare_to_base(results: dict[str, dict], base: dict, lam: float) -> None:
    """Add carbon_saving_pct, accuracy_loss_pct and Clover's objective (C_base at 250 g/kWh,
    PUE 1.5, from Base's simulated energy) to each policy's summary, in place."""
    base_ref = carbon_g(base["energy_j"], REFERENCE_CI, REFERENCE_PUE)
    for r in results.values():
        add_savings(r, base)
        r["objective"] = float(clover_score(lam, r["carbon_g"], r["accuracy"], base_ref, base["accuracy"]))


@dataclass
class PolicyRun:
    summary: dict
    plans: list[Plan]  # the plan decided at the start of each step
    timeline: list[tuple[float, Plan]]  # (time s, plan) of every deployment, re-plans within a step included


def run_policies(problem: PlanningProblem, trace_values: list[float], names: list[str],
                 config: SimConfig, on_skip: Callable[[str, str], None] | None = None,
                 load: np.ndarray | None = None) -> dict[str, PolicyRun]:
    """Replay every named policy (Base always, as the reference) on the same traffic (`load`:
    expected rate per `config.bin_s`, None for the problem's constant rate) and compare them
    to Base."""
    from controller.planning.policies import get_policy
    from controller.planning.policies.oracle import OracleTooLarge

    out: dict[str, PolicyRun] = {}
    for name in ["base", *[n for n in names if n != "base"]]:
        rp = Replay(problem, trace_values, get_policy(name, config.seed), config, load)
        try:
            summary = rp.run()
        except OracleTooLarge as exc:
            if on_skip:
                on_skip(name, str(exc))
            continue
        out[name] = PolicyRun(summary, rp.plans, rp.timeline)
    compare_to_base({k: v.summary for k, v in out.items()}, out["base"].summary, problem.lam)
    return out
