"""Policies on real bursty traffic: the Azure arrival pattern with a daily swing, scaled to 30 %,
60 % and 90 % of Base's capacity at its busiest minute, over carbon traces, for every service.

Run: .venv/bin/python bench/load_bench.py [--quick] [--workers 2]
Cases (2×H100-80GB, λ = 0.1, SLA = Base's predicted p95 at half its capacity, fixed per service):
- traffic `conv`: azure_llm_2023_conv (near-Poisson within a second, per-minute swings) looping
  hourly, times a daily envelope 3x peak-to-trough peaking at 14:00 on the carbon trace's clock;
  on clover_ciso-march_49h and clover_gb-eso-march_49h;
- traffic `code`: azure_llm_2023_code (on/off bursts, idle minutes), same envelope, on
  clover_ciso-march_49h;
`--quick`: conv on clover_ciso-march_49h, first 24 hours.
Policies: hindsight (offline optimum, perfect knowledge), ours, ours-myopic, ours-mean (planning
for the mean rate as a constant: the old behaviour), clover-sa, base. Every number comes from the
replay simulator in this one run.

Goals checked per case: f(ours) ≥ f(ours-myopic) ≥ f(clover-sa); f(ours) within 5 % of
f(hindsight); over-SLA share of ours ≤ Base's; carbon saving of ours vs Base ≥ 1.5x that of
ours-mean (constant-rate planning). Writes bench/results/load_bench.{md,json,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.loader import load_services  # noqa: E402
from controller.carbon.trace import load_trace  # noqa: E402
from controller.planning.model import PlanningProblem, base_p95_ms  # noqa: E402
from controller.planning.policy_runs import run_policies  # noqa: E402
from controller.planning.replay_load import default_rate_rps, time_scaled_config, traffic  # noqa: E402
from loadgen.arrivals import load_rate_trace  # noqa: E402
from models.performance import PerformanceModel  # noqa: E402

SERVICES = ["yolo", "efficientnet", "albert"]
GPUS = (("gpu0", "H100-80GB"), ("gpu1", "H100-80GB"))
LEVELS = (0.3, 0.6, 0.9)
DIURNAL, PEAK_HOUR, LAM = 3.0, 14.0, 0.1
PATTERNS = {"conv": "azure_llm_2023_conv", "code": "azure_llm_2023_code"}
FULL = [("conv", "clover_ciso-march_49h"), ("conv", "clover_gb-eso-march_49h"), ("code", "clover_ciso-march_49h")]
QUICK = [("conv", "clover_ciso-march_49h")]
POLICIES = ["hindsight", "ours", "ours-myopic", "ours-mean", "clover-sa"]
KEYS = ("objective", "carbon_g", "carbon_saving_pct", "accuracy", "over_sla_pct", "lost_requests",
        "reconfigurations", "layout_changes", "swaps")
RESULTS = Path(__file__).resolve().parent / "results"
NOTES = """How to read it: f is Clover's objective of the whole run (λ·ΔC − (1−λ)·ΔA against Base at 250 g/kWh);
it charges no SLA violation, so a policy that under-sizes (ours-mean, clover-sa on the code traffic) can
score above one that holds the SLA: read f next to the >SLA column. `ours − myopic` is the exact
difference (the f columns are rounded). `ours / hindsight` is f(ours)/f(hindsight) when hindsight's f is
positive; when both are negative (the code traffic with albert: holding the SLA through 14x bursts costs
more accuracy than Base, which breaks it, loses) it is f(hindsight)/f(ours), so it still reads "1 = as good
as hindsight, lower = worse" and the 0.95 goal means ours is at most ~5 % further below zero."""


def run_case(case: tuple[str, str, str, float, int | None]) -> dict:
    service, pattern, carbon, level, hours = case
    perf = PerformanceModel.default()
    svc = load_services().get(service)
    trace = load_trace(carbon)
    values = list(trace.values[:hours] if hours else trace.values)
    capacity = default_rate_rps(svc, GPUS, perf, 1.0)
    config = time_scaled_config(seed=1)
    load = traffic(load_rate_trace(PATTERNS[pattern]), trace.times[0], level * capacity, len(values), config,
                   DIURNAL, PEAK_HOUR)
    problem = PlanningProblem(svc, GPUS, perf, float(load.mean()), base_p95_ms(svc, GPUS, perf, 0.5 * capacity),
                              lam=LAM)
    t0 = time.perf_counter()
    runs = run_policies(problem, values, POLICIES, config, load=load)
    res = {name: {k: r.summary[k] for k in KEYS} for name, r in runs.items()}
    f = {name: r["objective"] for name, r in res.items()}
    saving_ratio = res["ours"]["carbon_saving_pct"] / res["ours-mean"]["carbon_saving_pct"] \
        if res["ours-mean"]["carbon_saving_pct"] > 0 else float("inf")
    checks = {
        "ours>=myopic>=sa": f["ours"] >= f["ours-myopic"] >= f["clover-sa"],
        "ours/hindsight>=0.95": _ratio(f["ours"], f["hindsight"]) >= 0.95,
        "over-SLA<=base": res["ours"]["over_sla_pct"] <= res["base"]["over_sla_pct"],
        "saving>=1.5x mean": saving_ratio >= 1.5,
    }
    return {"service": service, "pattern": pattern, "carbon": carbon, "level": level, "hours": len(values),
            "mean_rps": float(load.mean()), "busiest_minute_rps": level * capacity, "sla_ms": problem.sla_ms,
            "seconds": time.perf_counter() - t0, "ours_over_hindsight": _ratio(f["ours"], f["hindsight"]),
            "saving_ratio_vs_mean": saving_ratio, "policies": res, "checks": checks}


def _ratio(a: float, b: float) -> float:
    """a / b for objectives of the same sign; a negative pair reads the other way (closer to 0 is better)."""
    return a / b if b > 0 else (b / a if a < 0 else float("inf"))


def markdown(rows: list[dict], wall_s: float, quick: bool) -> str:
    head = ("| service | traffic | carbon | load | f hindsight / ours / myopic / mean / clover-sa / base | "
            "ours − myopic | ours / hindsight | >SLA % base / ours / mean / sa | saving % ours / mean (ratio) | "
            "lost ours / myopic / sa | reconf MIG+swap ours / myopic / sa | goals |")
    title = (f"Load bench{' (--quick)' if quick else ''}: {len(rows)} cases, {wall_s:.0f} s wall on this machine "
             "(2×H100-80GB simulated, λ 0.1, diurnal 3x peaking 14:00, SLA = Base p95 at half capacity).")
    out = [title, "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["policies"]
        f = " / ".join(f"{p[n]['objective']:.4f}" for n in ("hindsight", "ours", "ours-myopic", "ours-mean", "clover-sa",
                                                            "base"))
        over = " / ".join(f"{p[n]['over_sla_pct']:.2f}" for n in ("base", "ours", "ours-mean", "clover-sa"))
        lost = " / ".join(str(p[n]["lost_requests"]) for n in ("ours", "ours-myopic", "clover-sa"))
        reconf = " / ".join(f"{p[n]['layout_changes']}+{p[n]['swaps']}" for n in ("ours", "ours-myopic", "clover-sa"))
        goals = " ".join("✓" if ok else "✗" for ok in r["checks"].values())
        out.append(f"| {r['service']} | {r['pattern']} | {r['carbon'].replace('clover_', '').replace('_49h', '')} | "
                   f"{int(100 * r['level'])} % | {f} | {p['ours']['objective'] - p['ours-myopic']['objective']:+.1e} | "
                   f"{r['ours_over_hindsight']:.3f} | {over} | "
                   f"{p['ours']['carbon_saving_pct']:.1f} / {p['ours-mean']['carbon_saving_pct']:.1f} "
                   f"({r['saving_ratio_vs_mean']:.2f}) | {lost} | {reconf} | {goals} |")
    names = list(rows[0]["checks"]) if rows else []
    tally = ", ".join(f"{n}: {sum(r['checks'][n] for r in rows)}/{len(rows)}" for n in names)
    out += ["", f"Goals (✓/✗ in the order): {tally}.", "", NOTES]
    return "\n".join(out) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['service'][:4]} {r['pattern']} {r['carbon'].split('_')[1][:7]} {int(100 * r['level'])}%" for r in rows]
    x = range(len(rows))
    fig, (ax_f, ax_s) = plt.subplots(2, 1, figsize=(max(10, 0.45 * len(rows) + 3), 8), sharex=True)
    styles = (("ours", "o", "C0"), ("ours-myopic", "s", "C1"), ("ours-mean", "^", "C2"), ("clover-sa", "x", "C3"),
              ("base", "v", "C4"))
    for name, marker, color in styles:
        ax_f.plot(x, [_ratio(r["policies"][name]["objective"], r["policies"]["hindsight"]["objective"]) for r in rows],
                  marker, color=color, label=name)
        if name != "ours-myopic":
            ax_s.plot(x, [r["policies"][name]["over_sla_pct"] for r in rows], marker, color=color, label=name)
    ax_f.axhline(1.0, color="black", lw=0.8)
    ax_f.axhline(0.95, color="grey", ls="--", lw=0.8, label="95 % of hindsight")
    ax_f.set_ylim(-0.5, 1.3)
    ax_f.set_ylabel("objective / hindsight's")
    ax_f.set_title("objective relative to the offline optimum (hindsight = 1)")
    ax_f.legend(fontsize=8, ncol=3)
    ax_s.set_yscale("symlog", linthresh=1.0)
    ax_s.set_ylim(bottom=0.0)
    ax_s.set_ylabel("requests over the SLA (%)")
    ax_s.set_title("share of requests over the p95 SLA")
    ax_s.set_xticks(list(x), labels, rotation=70, fontsize=7)
    ax_s.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="conv on clover_ciso-march_49h, first 24 h")
    ap.add_argument("--workers", type=int, default=2, help="parallel cases (default 2: this machine's cores)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for load_bench.{md,json,png}")
    args = ap.parse_args()
    combos, hours = (QUICK, 24) if args.quick else (FULL, None)
    cases = [(s, p, c, lv, hours) for s in SERVICES for p, c in combos for lv in LEVELS]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        rows = list(pool.map(run_case, cases))
    wall = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "load_bench_quick" if args.quick else "load_bench"
    text = markdown(rows, wall, args.quick)
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.out / f"{stem}.png")
    print(text)
    print(f"wrote {args.out / stem}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
