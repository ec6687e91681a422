"""Policies on every service × trace: ours vs Clover's SA (and Rand), plus the oracle and the
queueing model's accuracy.

Run: .venv/bin/python bench/policies_bench.py [--quick] [--json OUT]
Cases: the three services on 2×H100-80GB at 50 % of Base's capacity (SLA = Base's p95),
λ = 0.1, on the three 49-hour Clover traces (every hour) and on full-year 2023 traces
sampled every 52nd hour (168 hours spread over the year and over the hours of the day;
`--quick` uses the Clover traces only). Steady hours are simulated as 60 s windows.

Columns: objective of ours and clover-sa (Clover's f over the run), carbon saving and
accuracy loss vs Base, share of requests over the SLA (Base has ≈5 % by construction),
exploration requests, and qerr = max over ours' replicas (first hour) of
|model p95 − simulated p95| / simulated p95 (600 s simulated per replica).
A second table compares ours with the exhaustive oracle where it can enumerate.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from configs.loader import load_services  # noqa: E402
from controller.carbon.trace import load_trace  # noqa: E402
from controller.planning.model import PlanningProblem, base_p95_ms, replica_loads  # noqa: E402
from controller.planning.planner import solve_exact  # noqa: E402
from controller.planning.policies.oracle import OracleTooLarge, solve_oracle  # noqa: E402
from controller.planning.queueing import p95_ms  # noqa: E402
from controller.planning.policy_runs import run_policies  # noqa: E402
from controller.planning.replay import SimConfig  # noqa: E402
from controller.planning.replay_load import default_rate_rps  # noqa: E402
from controller.planning.request_sim import replica_p95_sim  # noqa: E402
from models.performance import PerformanceModel  # noqa: E402

CLOVER_TRACES = ["clover_ciso-march_49h", "clover_ciso-sep_49h", "clover_gb-eso-march_49h"]
YEAR_TRACES = ["emaps_de_2023", "emaps_us-cal-ciso_2023", "emaps_za_2023"]
YEAR_STRIDE = 52
SERVICES = ["yolo", "efficientnet", "albert"]
GPUS = (("gpu0", "H100-80GB"), ("gpu1", "H100-80GB"))


def queueing_error(problem: PlanningProblem, plan, seed: int) -> float:
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _, rate, col in replica_loads(plan, problem):
        sim = replica_p95_sim(rate, col.service_ms, 600.0, rng)
        worst = max(worst, abs(p95_ms(rate, col.service_ms) - sim) / sim)
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Clover traces only")
    ap.add_argument("--policies", default="clover-sa,ours,rand")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    perf = PerformanceModel.default()
    names = args.policies.split(",")
    traces = CLOVER_TRACES + ([] if args.quick else YEAR_TRACES)
    rows, checks = [], []
    t_start = time.perf_counter()
    for service in SERVICES:
        svc = load_services().get(service)
        rate = default_rate_rps(svc, GPUS, perf)
        problem = PlanningProblem(svc, GPUS, perf, rate, base_p95_ms(svc, GPUS, perf, rate))
        for trace_name in traces:
            values = list(load_trace(trace_name).values)
            if trace_name in YEAR_TRACES:
                values = values[::YEAR_STRIDE]
            runs = run_policies(problem, values, names, SimConfig(seed=1))
            res = {k: v.summary for k, v in runs.items()}
            qerr = queueing_error(problem, runs["ours"].plans[0], 3)
            ours, sa, base = res["ours"], res["clover-sa"], res["base"]
            ok = (ours["objective"] >= sa["objective"] and ours["exploration_requests"] == 0
                  and ours["over_sla_pct"] <= base["over_sla_pct"])
            checks.append(ok)
            rows.append({"service": service, "trace": trace_name, "hours": len(values), "qerr": qerr, "ok": ok,
                         **{f"{p}.{k}": res[p][k] for p in res for k in
                            ("objective", "carbon_saving_pct", "accuracy_loss_pct", "over_sla_pct",
                             "exploration_requests", "reconfigurations", "solve_ms_p50")}})
    table = Table(title=f"policies on 2×H100-80GB, λ=0.1, rate = 50% of Base capacity ({time.perf_counter() - t_start:.0f} s)")
    heads = ["service", "trace", "h", "f ours", "f clover-sa", "f rand", "saving % ours/sa", "acc loss % ours/sa",
             ">SLA % base/ours/sa", "explore req ours/sa", "reconf ours/sa", "qerr", "ok"]
    for h in heads:
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(r["service"], r["trace"].replace("_2023", "").replace("_49h", ""), str(r["hours"]),
                      f"{r['ours.objective']:.4f}", f"{r['clover-sa.objective']:.4f}",
                      f"{r.get('rand.objective', float('nan')):.4f}",
                      f"{r['ours.carbon_saving_pct']:.1f}/{r['clover-sa.carbon_saving_pct']:.1f}",
                      f"{r['ours.accuracy_loss_pct']:.2f}/{r['clover-sa.accuracy_loss_pct']:.2f}",
                      f"{r['base.over_sla_pct']:.1f}/{r['ours.over_sla_pct']:.1f}/{r['clover-sa.over_sla_pct']:.1f}",
                      f"{r['ours.exploration_requests']}/{r['clover-sa.exploration_requests']}",
                      f"{r['ours.reconfigurations']}/{r['clover-sa.reconfigurations']}",
                      f"{100 * r['qerr']:.1f}%", "yes" if r["ok"] else "NO")
    console = Console(width=170)
    console.print(table)
    console.print(f"done criteria (ours ≥ clover-sa, 0 exploration, ≤ Base over-SLA): {sum(checks)}/{len(checks)} cases; "
                  f"max queueing-model error {100 * max(r['qerr'] for r in rows):.1f}%")

    # ours vs the exhaustive oracle (one planning instance per service where it can enumerate)
    ot = Table(title="ours vs exhaustive oracle (one H100, all variants, batch 1,2,4,8; and 2×H100, batch 1)")
    for h in ("service", "case", "CI", "f ours", "f oracle", "ours/oracle", "ours ms", "oracle s"):
        ot.add_column(h, justify="right")
    oracle_rows = []
    for service in SERVICES:
        svc = load_services().get(service)
        for label, gpus, batches in (("1xH100 b1-8", GPUS[:1], (1, 2, 4, 8)), ("2xH100 b1", GPUS, (1,))):
            rate = default_rate_rps(svc, gpus, perf)
            pb = PlanningProblem(svc, gpus, perf, rate, base_p95_ms(svc, gpus, perf, rate), carbon_intensity=200.0,
                                 batch_sizes=batches)
            t0 = time.perf_counter()
            ours = solve_exact(pb)
            t_ours = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            try:
                orc = solve_oracle(pb)
            except OracleTooLarge as exc:
                ot.add_row(service, label, "200", f"{ours.predicted.objective:.6f}", "n/a", str(exc)[:40], f"{t_ours:.0f}", "")
                continue
            t_orc = time.perf_counter() - t0
            ratio = ours.predicted.objective / orc.predicted.objective if orc.predicted.objective else 1.0
            oracle_rows.append({"service": service, "case": label, "ours": ours.predicted.objective,
                                "oracle": orc.predicted.objective})
            ot.add_row(service, label, "200", f"{ours.predicted.objective:.6f}", f"{orc.predicted.objective:.6f}",
                       f"{ratio:.6f}", f"{t_ours:.0f}", f"{t_orc:.1f}")
    console.print(ot)
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "oracle": oracle_rows}, indent=2))
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
