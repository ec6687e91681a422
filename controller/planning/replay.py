"""Trace-replay discrete-event simulator: any policy over an hourly carbon trace.

Per hour the policy decides (possibly after live trials, for Clover's search); the hour is then
a timeline of segments: trials, transitions (changed slices down), steady serving. Each
segment is simulated request by request: Poisson arrivals at rate R, weighted-random routing
by the plan's shares (so each replica sees an independent Poisson stream), per-replica FIFO
queue with greedy dynamic batching (controller/planning/queueing.py describes the same model), batch
service times and busy power from the performance model. GPUs draw idle power all the time.

Speed: a steady segment longer than `window_s` is represented by `warmup_s + window_s`
simulated seconds (the warm-up is discarded) whose requests and busy energy are scaled to
the segment's length; trials and transitions are simulated in full. 49 h × 2 GPUs replays
in about a second per policy.

Transitions: a changed slice serves nothing for its MIG operations + model load
(planning_model.ReconfigCost). With make-before-break (ours) unchanged replicas keep
serving and take the traffic; without it (Clover's artifact stops every service on the
node) the node serves nothing meanwhile and arriving requests are lost (latency ∞).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from configs.units import carbon_g
from controller.planning.model import PlanningProblem, capacity_shares, column_of, service_times, slice_profiles
from controller.planning.objective import REFERENCE_CI, REFERENCE_PUE, clover_score
from controller.planning.plan import Plan, diff_plans
from controller.planning.planner import transition_seconds
from controller.planning.policies.interface import HourContext, Policy, TrialResult


@dataclass(frozen=True)
class SimConfig:
    window_s: float = 60.0  # simulated seconds representing one steady segment
    warmup_s: float = 5.0
    trial_s: float = 30.0  # Clover's artifact charges 30 s per explored configuration
    forecast_h: int = 6
    seed: int = 0


class Tally:
    """Weighted request and energy accumulator of one policy run."""

    def __init__(self) -> None:
        self.lat: list[np.ndarray] = []
        self.w: list[np.ndarray] = []
        self.acc_sum = 0.0
        self.served = 0.0
        self.lost = 0.0  # requests that found no replica (a stopped node): latency ∞
        self.requests = 0.0
        self.energy_j = 0.0
        self.carbon_g = 0.0
        self.exploration_requests = 0.0
        self.hourly_carbon: list[float] = []

    def add(self, lat: np.ndarray, acc: np.ndarray, weight: float) -> None:
        self.lat.append(lat)
        self.w.append(np.full(len(lat), weight))
        ok = np.isfinite(lat)
        self.acc_sum += float(acc[ok].sum()) * weight
        self.served += float(ok.sum()) * weight
        self.lost += float((~ok).sum()) * weight
        self.requests += len(lat) * weight

    def quantile(self, q: float) -> float:
        lat = np.concatenate(self.lat) if self.lat else np.zeros(1)
        w = np.concatenate(self.w) if self.w else np.ones(1)
        order = np.argsort(lat)
        cum = np.cumsum(w[order])
        return float(lat[order][min(int(np.searchsorted(cum, q * cum[-1])), len(lat) - 1)])

    def over(self, limit_ms: float) -> float:
        lat = np.concatenate(self.lat) if self.lat else np.zeros(1)
        w = np.concatenate(self.w) if self.w else np.ones(1)
        return float(w[lat > limit_ms].sum() / w.sum())


def serve_replica(arrivals: np.ndarray, service_ms: np.ndarray, power_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Latencies (ms) of FIFO requests with greedy batching up to len(service_ms); busy energy (J)."""
    n = len(arrivals)
    lat = np.empty(n)
    big_b = len(service_ms)
    t_free = -math.inf
    energy = 0.0
    i = 0
    while i < n:
        start = arrivals[i] if arrivals[i] > t_free else t_free
        j = int(np.searchsorted(arrivals, start, side="right"))
        j = min(max(j, i + 1), i + big_b)
        b = j - i
        end = start + service_ms[b - 1]
        lat[i:j] = end - arrivals[i:j]
        energy += power_w[b - 1] * service_ms[b - 1] / 1000.0
        t_free = end
        i = j
    return lat, energy


def replica_p95_sim(rate_rps: float, service_ms, seconds: float, rng: np.random.Generator) -> float:
    """Simulated p95 of one replica (for validating controller/planning/queueing.py)."""
    arr = np.sort(rng.uniform(0.0, seconds * 1000.0, rng.poisson(rate_rps * seconds)))
    lat, _ = serve_replica(arr, np.asarray(service_ms, float), np.zeros(len(service_ms)))
    skip = np.searchsorted(arr, 0.05 * seconds * 1000.0)
    return float(np.quantile(lat[skip:], 0.95))


class Replay:
    """Runs one policy over the trace; `run()` returns its summary dict."""

    def __init__(self, problem: PlanningProblem, trace_values: list[float], policy: Policy, config: SimConfig) -> None:
        self.problem = problem
        self.trace = list(trace_values)
        self.policy = policy
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        self.tally = Tally()
        self.deployed: Plan | None = None
        self.reconfigurations = 0
        self.solve_ms: list[float] = []
        self.plans: list[Plan] = []
        self._hour_energy = 0.0
        self._hour_left = 3600.0

    # -- segments ------------------------------------------------------------------------
    def _segment(self, plan: Plan | None, seconds: float, exploration: bool = False,
                 down: set | None = None) -> tuple[float, float, float, float]:
        """Simulate `seconds` on `plan` (replicas in `down` do not serve). Returns (busy energy J,
        requests, accuracy, p95) of the simulated window, already added to the tally."""
        if seconds <= 0:
            return 0.0, 0.0, 0.0, 0.0
        p = self.problem
        idle = sum(p.perf.idle_power_w(t) for _, t in p.gpus) * seconds
        sim_s = min(seconds, self.cfg.window_s) if seconds > self.cfg.trial_s else seconds
        warm = self.cfg.warmup_s if seconds > self.cfg.trial_s else 0.0
        scale = seconds / sim_s
        reps = [] if plan is None else [(g, s) for g, s in plan.replicas()
                                        if s.share > 0 and (down is None or (g.gpu_id, s.placement) not in down)]
        total_share = sum(s.share for _, s in reps)
        n_total = self.rng.poisson(p.rate_rps * (sim_s + warm))
        arrivals_all = np.sort(self.rng.uniform(-warm * 1000.0, sim_s * 1000.0, n_total))
        if not reps:
            lat = np.full(int((arrivals_all >= 0).sum()), math.inf)
            self.tally.add(lat, np.zeros(len(lat)), scale)
            busy, acc_mean, p95 = 0.0, 0.0, math.inf
        else:
            pick = self.rng.choice(len(reps), size=n_total, p=np.array([s.share for _, s in reps]) / total_share)
            lats, accs, busy = [], [], 0.0
            for k, (g, s) in enumerate(reps):
                arr = arrivals_all[pick == k]
                col = column_of(p, g.gpu_type, s)
                key = p.service.variant(s.variant).profile_key
                svc = np.asarray(service_times(p.perf, key, g.gpu_type, col.slices, s.batch))
                pw = np.array([p.perf.busy_power_w(key, g.gpu_type, col.slices, b) for b in range(1, s.batch + 1)])
                lat, e = serve_replica(arr, svc, pw)
                keep = arr >= 0
                # busy energy of the measured window only (batches of warm-up requests are few)
                busy += e * (keep.sum() / max(len(arr), 1))
                lats.append(lat[keep])
                accs.append(np.full(int(keep.sum()), col.accuracy))
            lat, acc = np.concatenate(lats), np.concatenate(accs)
            self.tally.add(lat, acc, scale)
            ok = np.isfinite(lat)
            acc_mean = float(acc[ok].mean()) if ok.any() else 0.0
            p95 = float(np.quantile(lat, 0.95)) if len(lat) else 0.0
            busy *= scale
        requests = len(lat) * scale
        if exploration:
            self.tally.exploration_requests += requests
        self._hour_energy += idle + busy
        self._hour_left -= seconds
        return idle + busy, requests, acc_mean, p95

    def _switch(self, new: Plan, exploration: bool = False) -> None:
        """Move from the deployed plan to `new`, simulating the transition downtime."""
        old = self.deployed
        changes = diff_plans(old, new)
        if old is not None and changes:
            self.reconfigurations += 1
            secs = min(transition_seconds(self.problem, old, new), max(self._hour_left, 0.0))
            if getattr(self.policy, "make_before_break", True):
                down = {(gid, s.placement) for gid, c in changes.items() for s in c.stop}
                interim = self._interim(old, down)
                self._segment(interim, secs, exploration)
            else:
                stopped = set(changes)
                interim = Plan(old.service, tuple(g for g in old.gpus if g.gpu_id not in stopped), old.rate_rps)
                self._segment(self._interim(interim, set()) if interim.gpus else None, secs, exploration)
        self.deployed = new

    def _interim(self, plan: Plan, down: set) -> Plan | None:
        """Serving replicas meanwhile, their shares in proportion to SLA capacity."""
        alive = [(g, s) for g, s in plan.replicas() if (g.gpu_id, s.placement) not in down]
        if not alive:
            return None
        shares = capacity_shares(self.problem, [(g.gpu_type, s) for g, s in alive])
        share = {(g.gpu_id, s.placement): x for (g, s), x in zip(alive, shares)}
        gpus = tuple(replace(g, slices=tuple(replace(s, share=share[(g.gpu_id, s.placement)])
                                             for s in g.slices if (g.gpu_id, s.placement) in share))
                     for g in plan.gpus)
        return replace(plan, gpus=gpus)

    def _trial(self, plan: Plan) -> TrialResult:
        self._switch(plan, exploration=True)
        energy, req, acc, p95 = self._segment(plan, self.cfg.trial_s, exploration=True)
        return TrialResult(energy, req, acc, p95, self.cfg.trial_s)

    # -- the run -------------------------------------------------------------------------
    def run(self) -> dict:
        p = self.problem
        mean_ci = float(np.mean(self.trace))
        for h, ci in enumerate(self.trace):
            self._hour_energy, self._hour_left = 0.0, 3600.0
            forecast = tuple(self.trace[h + 1: h + self.cfg.forecast_h])
            problem = p.with_(carbon_intensity=ci, current=self.deployed, forecast=forecast)
            trial_time = [0.0]

            def trial(plan: Plan) -> TrialResult:
                t0 = time.perf_counter()
                try:
                    return self._trial(plan)
                finally:
                    trial_time[0] += time.perf_counter() - t0

            ctx = HourContext(h, ci, forecast, mean_ci, problem, self.deployed, trial)
            t0 = time.perf_counter()
            plan = self.policy.decide(ctx)
            self.solve_ms.append((time.perf_counter() - t0 - trial_time[0]) * 1000.0)
            self._switch(plan)
            self.plans.append(plan)
            self._segment(plan, max(self._hour_left, 0.0))
            c = carbon_g(self._hour_energy, ci, p.pue)
            self.tally.energy_j += self._hour_energy
            self.tally.carbon_g += c
            self.tally.hourly_carbon.append(c)
        return self.summary()

    def summary(self) -> dict:
        t = self.tally
        return {
            "carbon_g": float(t.carbon_g),
            "energy_j": float(t.energy_j),
            "accuracy": float(t.acc_sum / t.served) if t.served else 0.0,
            "p50_ms": t.quantile(0.5),
            "p95_ms": t.quantile(0.95),
            "sla_ms": self.problem.sla_ms,
            "over_sla_pct": 100.0 * t.over(self.problem.sla_ms),
            "requests": float(t.requests),
            "lost_requests": int(round(t.lost)),
            "reconfigurations": self.reconfigurations,
            "exploration_requests": int(round(t.exploration_requests)),
            "solve_ms_p50": float(np.median(self.solve_ms)) if self.solve_ms else 0.0,
            "hourly_carbon_g": [float(c) for c in t.hourly_carbon],
        }


def compare_to_base(results: dict[str, dict], base: dict, lam: float) -> None:
    """Add carbon_saving_pct, accuracy_loss_pct and Clover's objective (C_base at 250 g/kWh,
    PUE 1.5, from Base's simulated energy) to each policy's summary, in place."""
    base_ref = carbon_g(base["energy_j"], REFERENCE_CI, REFERENCE_PUE)
    for r in results.values():
        r["carbon_saving_pct"] = 100.0 * (base["carbon_g"] - r["carbon_g"]) / base["carbon_g"]
        r["accuracy_loss_pct"] = 100.0 * (base["accuracy"] - r["accuracy"]) / base["accuracy"]
        r["objective"] = float(clover_score(lam, r["carbon_g"], r["accuracy"], base_ref, base["accuracy"]))


@dataclass
class PolicyRun:
    summary: dict
    plans: list[Plan]


def default_rate_rps(service, gpus, perf, fraction: float = 0.5) -> float:
    """`fraction` of Base's capacity (base variant, whole GPU, batch 1, summed over GPUs):
    Base then runs at 50 % utilisation and its p95 (the default SLA) is a sensible target."""
    return fraction * sum(
        perf.throughput_rps(service.base.profile_key, t, max(slice_profiles(t)), 1) for _, t in gpus)


def run_policies(problem: PlanningProblem, trace_values: list[float], names: list[str],
                 config: SimConfig, on_skip: Callable[[str, str], None] | None = None) -> dict[str, PolicyRun]:
    """Replay every named policy (Base always, as the reference) and compare them to Base."""
    from controller.planning.policies import get_policy
    from controller.planning.policies.oracle import OracleTooLarge

    out: dict[str, PolicyRun] = {}
    for name in ["base", *[n for n in names if n != "base"]]:
        rp = Replay(problem, trace_values, get_policy(name, config.seed), config)
        try:
            summary = rp.run()
        except OracleTooLarge as exc:
            if on_skip:
                on_skip(name, str(exc))
            continue
        out[name] = PolicyRun(summary, rp.plans)
    compare_to_base({k: v.summary for k, v in out.items()}, out["base"].summary, problem.lam)
    return out
