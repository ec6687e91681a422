"""Trace-replay discrete-event simulator: any policy over an hourly carbon trace and a load.

Per step (one row of the carbon trace, an hour by default) the policy decides (possibly after
live trials, for Clover's search); the step is then a timeline of segments: trials, transitions
(changed slices down), steady serving. Load-aware policies are also asked again within a step
whenever the measured rate leaves the band their plan was sized for (load_forecast.replan_due,
checked every `check_s`; with a varying load every policy's step is cut into segments at
those check points, re-planned there or not, so that policies serving the same plan sample the
same chunks). Each segment is simulated request by request: Poisson arrivals whose
rate follows the load profile (a constant, or a rate trace per `bin_s`), weighted-random
routing by the plan's shares (so each replica sees an independent Poisson stream), per-replica
FIFO queue with greedy dynamic batching (controller/planning/queueing.py describes the same
model), batch service times and busy power from the performance model. GPUs draw idle power
all the time; loading a new replica draws its batch-1 busy power for `model_load_s`.

Speed: a steady segment is represented by samples whose requests and busy energy are scaled
to the expected requests of the segment (a ratio estimator). At a constant rate that is one window of `warmup_s + window_s` (the warm-up is
discarded); when the rate varies, the segment is cut into `chunk_s` chunks ranked by expected
requests, split into strata (for an hour: the busiest 3 %, the next 7 %, 15 %, 25 %, and the
quietest half; fewer for shorter segments), and one random chunk per stratum is simulated after its own warm-up, standing for the
requests of its stratum (stratified sampling: the bursts are always looked at).
Trials and transitions are simulated in full. 49 h × 2 GPUs replays in seconds per policy.

Transitions: a changed slice serves nothing for its MIG operations + model load
(controller/planning/switching.py, which the planner's pay-back charges identically). With
make-before-break (ours) unchanged replicas keep serving and take the traffic; without it
(Clover's artifact stops every service on the node) the node serves nothing meanwhile. A
request that finds no replica is lost: latency ∞, counted in `lost_requests` and at accuracy 0.

The `Replay` class is one timeline (decide, switch, segments, tally) and stays in one file; the
request-level core, the load set-up and the policy comparison live beside it.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from configs.units import carbon_g
from controller.planning.load_forecast import ForecastParams, replan_due
from controller.planning.model import (
    PlanningProblem,
    column_of,
    idle_power_w,
)
from controller.planning.plan import Plan, diff_plans
from controller.planning.policies.interface import (
    HourContext,
    LoadHistory,
    Policy,
    TraceKnowledge,
    TrialResult,
)
from controller.planning.request_sim import Tally, serve_replica
from controller.planning.switching import load_power_w, serving_subset, transition_seconds

# rank fractions splitting a varying segment's chunks into strata, by number of strata (one per
# 12 minutes of segment, 2 to 5): the busiest chunks always get a stratum of their own
STRATA = {2: (0.9,), 3: (0.5, 0.9), 4: (0.5, 0.75, 0.9), 5: (0.5, 0.75, 0.9, 0.97)}


@dataclass(frozen=True)
class SimConfig:
    window_s: float = 60.0  # simulated seconds representing one steady segment at a constant rate
    warmup_s: float = 5.0
    trial_s: float = 30.0  # Clover's artifact charges 30 s per explored configuration
    forecast_h: int = 6
    seed: int = 0
    step_s: float = 3600.0  # simulated seconds per row of the carbon trace
    check_s: float = 900.0  # how often the band of load-aware policies is checked within a step
    chunk_s: float = 10.0  # chunk length when the rate varies within a segment
    bin_s: float = 1.0  # resolution of the load profile and of the counts policies see
    history_s: float = 3600.0  # how far back load-aware policies look
    forecast: ForecastParams = field(default_factory=ForecastParams)


class Replay:
    """Runs one policy over the trace; `run()` returns its summary dict.

    `load`: the expected request rate per `config.bin_s` over the whole replay (None: the
    problem's rate, constant). Policies see `problem.rate_rps` as the configured rate.
    """

    def __init__(self, problem: PlanningProblem, trace_values: list[float], policy: Policy, config: SimConfig,
                 load: np.ndarray | None = None) -> None:
        self.problem = for_load(problem, load)
        self.trace = list(trace_values)
        self.policy = policy
        self.cfg = config
        self.tally = Tally()
        self.deployed: Plan | None = None
        self.reconfigurations = 0
        self.layout_changes = 0  # GPUs re-partitioned (MIG instances destroyed/created)
        self.mig_ops = 0
        self.swaps = 0  # replicas started on slices that stay (variant or batch swaps)
        self.solve_ms: list[float] = []
        self.plans: list[Plan] = []
        self.timeline: list[tuple[float, Plan]] = []  # (time s, plan) of every deployment
        self.varying = load is not None
        self.rates = load_profile(problem, len(self.trace), config, load)
        self.counts = counted(self.rates, config)
        self._t = 0.0  # how far the simulation has got
        self._now = 0.0  # the decision clock (band checks look ahead of the simulation)
        self._step_energy = 0.0
        self._step_end = 0.0

    # -- load ----------------------------------------------------------------------------
    def _rng(self, *at: float) -> np.random.Generator:
        """Random numbers tied to a time (and length), not to the order of draws: every policy
        meets the same arrivals, routing draws and samples wherever its timeline coincides with
        another's (common random numbers), so their differences are the plans', not noise."""
        return np.random.default_rng([self.cfg.seed, *(round(x * 1000.0) % 2**63 for x in at)])

    def _arrivals(self, a: float, b: float, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times (s) in [a, b) of a Poisson process following the profile."""
        w = self.cfg.bin_s
        first, last = math.floor(a / w), math.ceil(b / w)
        idx = np.arange(first, last)
        lo, hi = np.maximum(idx * w, a), np.minimum((idx + 1) * w, b)
        rate = self.rates[np.clip(idx, 0, len(self.rates) - 1)]
        n = rng.poisson(rate * np.maximum(hi - lo, 0.0))
        starts, spans = np.repeat(lo, n), np.repeat(hi - lo, n)
        return np.sort(starts + rng.uniform(0.0, 1.0, len(starts)) * spans)

    def _expected(self, a: float, b: float) -> float:
        """Expected requests of the profile in [a, b)."""
        w = self.cfg.bin_s
        idx = np.arange(math.floor(a / w), math.ceil(b / w))
        overlap = np.minimum((idx + 1) * w, b) - np.maximum(idx * w, a)
        return float((self.rates[np.clip(idx, 0, len(self.rates) - 1)] * np.maximum(overlap, 0.0)).sum())

    def _windows(self, t0: float, seconds: float) -> list[tuple[float, float, float | None, float]]:
        """(start, length, requests it stands for, warm-up) of the windows representing
        [t0, t0 + seconds); None: the window is the whole segment, counted as drawn."""
        cfg = self.cfg
        if seconds <= cfg.trial_s:  # trials and transitions: in full, from an empty queue
            return [(t0, seconds, None, 0.0)]
        w = cfg.bin_s
        rates = self.rates[int(t0 / w): max(int(t0 / w) + 1, math.ceil((t0 + seconds) / w))]
        if not self.varying or np.ptp(rates) <= 1e-9 * max(float(rates.max()), 1e-9):
            sim = min(seconds, cfg.window_s)
            return [(t0 + seconds - sim, sim, self._expected(t0, t0 + seconds), cfg.warmup_s)]
        # chunks on a grid of absolute time, picked by rank with draws tied to the step: segments
        # that differ by a transition of a few seconds sample (nearly) the same chunks
        c = cfg.chunk_s
        first, last = math.ceil(t0 / c - 1e-9), math.floor((t0 + seconds) / c + 1e-9)
        if last - first < 2:
            return [(t0, seconds, None, 0.0)]
        expected = np.array([self._expected(k * c, (k + 1) * c) for k in range(first, last)])
        order = np.argsort(expected, kind="stable")
        n = len(expected)
        fractions = STRATA[min(5, max(2, round(seconds / 720.0)))]
        bounds = [0, *sorted({round(f * n) for f in fractions}), n]
        stretch = self._expected(t0, t0 + seconds) / max(float(expected.sum()), 1e-12)  # the partial chunks
        draws = self._rng(math.floor(t0 / cfg.step_s), len(fractions)).uniform(size=len(bounds) - 1)
        out = []
        for (a, b), u in zip(itertools.pairwise(bounds), draws):
            if b > a:
                k = first + order[a + int(u * (b - a))]
                out.append((k * c, c, float(expected[order[a:b]].sum()) * stretch, cfg.warmup_s))
        return out

    # -- segments ------------------------------------------------------------------------
    def _segment(self, plan: Plan | None, seconds: float, exploration: bool = False) -> tuple[float, float, float, float]:
        """Simulate the next `seconds` on `plan`. Returns (energy J, requests, accuracy, p95) of
        the segment, already added to the tally."""
        if seconds <= 0:
            return 0.0, 0.0, 0.0, 0.0
        p = self.problem
        idle = idle_power_w(p) * seconds
        busy = requests = acc_sum = 0.0
        lats = []
        for start, length, stands_for, warm in self._windows(self._t, seconds):
            lat, acc, e = self._window(plan, start, length, warm)
            # ratio estimator: the window's requests stand for the expected requests of what it
            # represents (its own Poisson count noise does not scale up)
            weight = 1.0 if stands_for is None else stands_for / max(len(lat), 1)
            self.tally.add(lat, acc, weight)
            busy += e * weight
            requests += len(lat) * weight
            acc_sum += float(acc.sum()) * weight
            lats.append(lat)
        if exploration:
            self.tally.exploration_requests += requests
        self._step_energy += idle + busy
        self._t += seconds
        lat = np.concatenate(lats)
        p95 = float(np.quantile(lat, 0.95, method="higher")) if len(lat) else 0.0  # no ∞ − ∞ when requests are lost
        return idle + busy, requests, acc_sum / requests if requests else 0.0, p95

    def _window(self, plan: Plan | None, start: float, length: float, warm: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Latencies (ms) and accuracies of the requests of [start, start + length) after a
        warm-up from an empty queue, and their busy energy (J)."""
        p = self.problem
        rng = self._rng(start, length, warm)
        arrivals_all = (self._arrivals(start - warm, start + length, rng) - start) * 1000.0
        route = rng.uniform(0.0, 1.0, len(arrivals_all))
        reps = [] if plan is None else [(g, s) for g, s in plan.replicas() if s.share > 0]
        keep_all = arrivals_all >= 0
        if not reps:
            n = int(keep_all.sum())
            return np.full(n, math.inf), np.zeros(n), 0.0
        shares = np.cumsum([s.share for _, s in reps])
        pick = np.minimum(np.searchsorted(shares / shares[-1], route, side="right"), len(reps) - 1)
        lats, accs, busy = [], [], 0.0
        for k, (g, s) in enumerate(reps):
            arr = arrivals_all[pick == k]
            col = column_of(p, g.gpu_type, s)
            lat, e = serve_replica(arr, np.asarray(col.service_ms), np.asarray(col.busy_w))
            keep = arr >= 0
            # busy energy of the measured window only (batches of warm-up requests are few)
            busy += e * (keep.sum() / max(len(arr), 1))
            lats.append(lat[keep])
            accs.append(np.full(int(keep.sum()), col.accuracy))
        return np.concatenate(lats), np.concatenate(accs), busy

    def _switch(self, new: Plan, exploration: bool = False) -> None:
        """Move from the deployed plan to `new`, simulating the transition."""
        old = self.deployed
        changes = diff_plans(old, new)
        if old is not None and changes:
            self.reconfigurations += 1
            self.layout_changes += sum(c.mig_ops > 0 for c in changes.values())
            self.mig_ops += sum(c.mig_ops for c in changes.values())
            self.swaps += sum(len(c.start_kept) for c in changes.values())
            secs = min(transition_seconds(self.problem, old, new), max(self._step_end - self._t, 0.0))
            self._step_energy += load_power_w(self.problem, old, new) * self.problem.reconfig.model_load_s
            if getattr(self.policy, "make_before_break", True):
                down = {(gid, s.placement) for gid, c in changes.items() for s in c.stop}
            else:  # the node stops: every replica of a changed GPU is down
                down = {(gid, s.placement) for gid in changes for g in old.gpus if g.gpu_id == gid
                        for s in g.slices}
            self._segment(serving_subset(self.problem, old, down), secs, exploration)
        self.deployed = new
        self.timeline.append((self._t, new))

    def _trial(self, plan: Plan) -> TrialResult:
        self._switch(plan, exploration=True)
        energy, req, acc, p95 = self._segment(plan, self.cfg.trial_s, exploration=True)
        return TrialResult(energy, req, acc, p95, self.cfg.trial_s)

    # -- the run -------------------------------------------------------------------------
    def _load_history(self) -> LoadHistory | None:
        """The counts up to now; in the first step, that step's own (the operator's expectation)."""
        return load_history(self.counts, self._now, self.cfg) if self.varying else None

    def _decide(self, h: int, ci: float, mean_ci: float) -> Plan:
        problem = step_problem(self.problem, self.trace, h, self.cfg, self.deployed)
        forecast = problem.forecast
        trial_time = [0.0]

        def trial(plan: Plan) -> TrialResult:
            t0 = time.perf_counter()
            try:
                return self._trial(plan)
            finally:
                trial_time[0] += time.perf_counter() - t0

        ctx = HourContext(h, ci, forecast, mean_ci, problem, self.deployed, trial, self._load_history())
        t0 = time.perf_counter()
        plan = self.policy.decide(ctx)
        self.solve_ms.append((time.perf_counter() - t0 - trial_time[0]) * 1000.0)
        return plan

    def _band_exit(self) -> bool:
        history = self._load_history()
        if history is None or self.deployed is None:
            return False
        return replan_due(self.deployed.rate_rps, history.forecast(0), self.cfg.forecast) is not None

    def run(self) -> dict:
        p, cfg = self.problem, self.cfg
        mean_ci = float(np.mean(self.trace))
        prepare = getattr(self.policy, "prepare", None)  # duck-typed policies (tests) may lack the hooks
        if prepare:
            prepare(TraceKnowledge(tuple(self.trace), self.counts, cfg.bin_s, cfg.step_s, cfg.forecast))
        checks = getattr(self.policy, "load_aware", False) and self.varying
        for h, ci in enumerate(self.trace):
            self._step_energy, self._t, self._step_end = 0.0, h * cfg.step_s, (h + 1) * cfg.step_s
            self._now = self._t
            plan = self._decide(h, ci, mean_ci)
            self._switch(plan)
            self.plans.append(plan)
            for k in range(1, math.ceil(cfg.step_s / cfg.check_s - 1e-9) if self.varying else 0):
                self._now = h * cfg.step_s + k * cfg.check_s
                if self._now <= self._t:
                    continue
                # every policy is simulated on the same grid of segments, re-planned there or not:
                # policies serving the same plan then sample the same chunks (common random numbers)
                self._segment(self.deployed, self._now - self._t)
                if not checks or not self._band_exit():
                    continue
                plan = self._decide(h, ci, mean_ci)
                if same_serving(self.deployed, plan):  # only the sized rate moved: nothing to switch
                    self.deployed = plan
                    continue
                self._switch(plan)
            self._segment(self.deployed, max(self._step_end - self._t, 0.0))
            c = carbon_g(self._step_energy, ci, p.pue)
            self.tally.energy_j += self._step_energy
            self.tally.carbon_g += c
            self.tally.hourly_carbon.append(c)
        return self.summary()

    def summary(self) -> dict:
        t = self.tally
        return {
            "carbon_g": float(t.carbon_g),
            "energy_j": float(t.energy_j),
            "accuracy": float(t.acc_sum / t.requests) if t.requests else 0.0,
            "p50_ms": t.quantile(0.5),
            "p95_ms": t.quantile(0.95),
            "sla_ms": self.problem.sla_ms,
            "over_sla_pct": 100.0 * t.over(self.problem.sla_ms),
            "requests": float(t.requests),
            "lost_requests": int(round(t.lost)),
            "reconfigurations": self.reconfigurations,
            "layout_changes": self.layout_changes,
            "mig_ops": self.mig_ops,
            "swaps": self.swaps,
            "exploration_requests": int(round(t.exploration_requests)),
            "solve_ms_p50": float(np.median(self.solve_ms)) if self.solve_ms else 0.0,
            "hourly_carbon_g": [float(c) for c in t.hourly_carbon],
        }


def for_load(problem: PlanningProblem, load: np.ndarray | None) -> PlanningProblem:
    """The problem a replay of `load` plans from: with a varying load every step is normalised to
    the configured (mean) rate, so that the steps' objectives add up to the run's."""
    return problem if load is None else problem.with_(reference_rate_rps=problem.rate_rps)


def load_profile(problem: PlanningProblem, steps: int, config: SimConfig, load: np.ndarray | None) -> np.ndarray:
    """The expected rate per `config.bin_s` over `steps` steps: `load` (cut to length), or the
    problem's rate throughout."""
    n_bins = max(1, math.ceil(steps * config.step_s / config.bin_s - 1e-9))
    rates = np.full(n_bins, problem.rate_rps) if load is None else np.asarray(load, float)[:n_bins]
    if len(rates) < n_bins:
        raise ValueError(f"the load profile covers {len(rates)} bins, the replay needs {n_bins}")
    return rates


def counted(rates: np.ndarray, config: SimConfig) -> np.ndarray:
    """What a live loop would have counted per bin: an independent draw from the same profile,
    seeded by the replay's seed alone, so that the joint planner (joint_replay.py) and each
    service's `Replay` see the same counts."""
    return np.random.default_rng(config.seed + 1).poisson(rates * config.bin_s)


def load_history(counts: np.ndarray, now_s: float, config: SimConfig) -> LoadHistory:
    """The counts up to `now_s`; in the first step, that step's own (the operator's expectation)."""
    now = max(round(now_s / config.bin_s), round(config.step_s / config.bin_s))
    return LoadHistory(counts[:now], config.bin_s, config.step_s, max(config.history_s, config.step_s), config.forecast)


def step_problem(problem: PlanningProblem, trace: list[float], h: int, config: SimConfig,
                 current: Plan | None) -> PlanningProblem:
    """The problem a policy is given at step `h`: the step's carbon intensity, the trace's next
    values as its forecast, the pay-back horizon cut where the run ends (nothing pays back after
    it). Shared by the replay and the joint replay so both policies see the same future."""
    left = min(problem.reconfig.horizon_h, len(trace) - h)
    return problem.with_(carbon_intensity=trace[h], current=current, forecast=tuple(trace[h + 1: h + config.forecast_h]),
                         reconfig=replace(problem.reconfig, horizon_h=left))


def same_serving(a: Plan | None, b: Plan) -> bool:
    """The same replicas with the same shares (a re-plan that only moved the sized rate)."""
    if a is None or diff_plans(a, b):
        return False
    shares = {(g.gpu_id, s.placement): s.share for g, s in a.replicas()}
    return all(abs(shares.get((g.gpu_id, s.placement), -1.0) - s.share) <= 1e-9 for g, s in b.replicas())
