"""Fit the performance model to profiles, print its error table, draw model vs measured.

    .venv/bin/python bench/perf_model_fit.py [--profiles FILE ...] [--plot docs/img/perf_model.png]

Without --profiles it uses the bundled H100 profiles (configs/profiles). The numbers it
prints are the ones quoted in docs/performance-model.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from statistics import median

from configs.loader import profile_paths
from models.performance import PerformanceModel
from models.performance_validation import (
    PointError,
    in_sample,
    leave_one_out,
    summarize,
)
from models.profile_points import load_points

REPO = Path(__file__).resolve().parent.parent


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def print_tables(model: PerformanceModel, fitted: list[PointError], loo: list[PointError]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"Per-variant fit ({model.reference_gpu_type}, fp16; errors are |model-measured|/measured, in-sample)")
    for col in ("variant", "latency from", "power from", "a ms", "c ms/item", "d ms/item", "p0 W", "k W",
                "lat med", "lat worst", "pow med", "pow worst"):
        t.add_column(col, justify="left" if col in ("variant", "latency from", "power from") else "right")
    for v in model.variants():
        f = model.fit(v)
        errs = [e for e in fitted if e.variant == v]
        lat = [abs(e.latency_rel) for e in errs]
        pw = [abs(r) for e in errs if (r := e.power_rel) is not None]
        t.add_row(v, f.latency_source, f.power_source, f"{f.a_ms:.2f}", f"{f.c_ms:.3f}", f"{f.d_ms:.3f}",
                  f"{f.p0_w:.0f}", f"{f.k_w:.0f}", _pct(median(lat)), _pct(max(lat)),
                  _pct(median(pw)) if pw else "-", _pct(max(pw)) if pw else "-")
    console.print(t)

    s = Table(title="Summary: relative error of the model vs measured points")
    for col in ("check", "points", "latency median", "latency worst", "power median", "power worst"):
        s.add_column(col, justify="left" if col == "check" else "right")
    rows = [
        ("in-sample, all points", fitted),
        ("in-sample, slice points (SM share < 1)", [e for e in fitted if e.sm_fraction < 1]),
        ("leave-one-out, slice points of the 7 MPS variants", loo),
    ]
    for name, errs in rows:
        sm = summarize(errs)
        s.add_row(name, str(sm.points), _pct(sm.latency_median), _pct(sm.latency_worst),
                  _pct(sm.power_median), _pct(sm.power_worst))
    console.print(s)


def plot(model: PerformanceModel, fitted: list[PointError], loo: list[PointError], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    groups = [
        ("in-sample, whole GPU", [e for e in fitted if e.sm_fraction == 1.0], "tab:blue", "o"),
        ("in-sample, slice", [e for e in fitted if e.sm_fraction < 1.0], "tab:green", "s"),
        ("leave-one-out, slice", loo, "tab:red", "x"),
    ]
    for ax, what in zip(axes[:2], ("latency", "power")):
        for label, errs, color, marker in groups:
            pairs = [(e.measured_ms, e.model_ms) if what == "latency" else (e.measured_w, e.model_w) for e in errs]
            pairs = [(m, p) for m, p in pairs if m]
            ax.scatter([m for m, _ in pairs], [p for _, p in pairs], s=18, c=color, marker=marker, label=label, alpha=0.8)
        lo, hi = (3, 400) if what == "latency" else (40, 800)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        for fac in (0.75, 1.25):
            ax.plot([lo, hi], [lo * fac, hi * fac], "k:", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        unit = "mean batch latency (ms)" if what == "latency" else "dynamic power above idle (W)"
        ax.set_xlabel(f"measured {unit}")
        ax.set_ylabel(f"model {unit}")
        ax.set_title(f"{what}: model vs measured (dotted: ±25%)")
        ax.legend(fontsize=8)

    ax = axes[2]
    fractions = [i / 100 for i in range(8, 101)]
    sliced = sorted({e.variant for e in fitted if e.sm_fraction < 1.0})
    for i, v in enumerate(sliced):
        color = f"C{i}"
        f = model.fit(v)
        ax.plot(fractions, [f.latency_ms(x, 8) for x in fractions], color=color, lw=1.2, label=v)
        pts = [p for p in model.points if p.variant == v and p.batch == 8]
        ax.scatter([p.sm_fraction for p in pts], [p.lat_mean_ms for p in pts], color=color, s=16)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("share of the GPU's SMs (MPS limit; 1g=0.12 … 7g=1)")
    ax.set_ylabel("batch-8 latency (ms)")
    ax.set_title("batch 8: fitted lat = a + d·b + c·b/f (lines) vs measured (dots)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", nargs="+", type=Path, default=None, help="profile JSON files (default: bundled H100)")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "perf_model.png", help="PNG to write")
    args = ap.parse_args(argv)
    paths = args.profiles or profile_paths()
    model = PerformanceModel.from_profiles(paths)
    points = load_points(paths)
    cap = model.max_power_w(model.reference_gpu_type) - model.idle_power_w(model.reference_gpu_type)
    fitted, loo = in_sample(points, cap), leave_one_out(points, cap)
    print_tables(model, fitted, loo)
    plot(model, fitted, loo, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
