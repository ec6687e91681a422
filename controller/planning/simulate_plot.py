"""Plots of `controller simulate --plot` (matplotlib, Agg): CI (and the offered load) with the
chosen configuration over time, and carbon per step by policy."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the file-only Agg backend (no display here or in CI), imported only
    when a plot is drawn (a heavy import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(out_dir: Path, ci: list[float], runs: dict, label: Callable,
              step_rates: list[float] | None = None, step_s: float = 3600.0) -> list[Path]:
    """`step_rates`: the offered mean rate of each step (a rate trace), drawn with the rate each
    policy sized its plan for."""
    plt = pyplot()

    out_dir.mkdir(parents=True, exist_ok=True)
    hours = list(range(len(ci)))
    names = list(runs)
    panels = [2, 2, max(1, len(names) * 0.5)] if step_rates else [2, max(1, len(names) * 0.5)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3 + 0.45 * len(names) + 2 * bool(step_rates)), sharex=True,
                             gridspec_kw={"height_ratios": panels})
    ax_ci, ax_cfg = axes[0], axes[-1]
    ax_ci.step([*hours, len(ci)], [*ci, ci[-1]], where="post", color="black")
    ax_ci.set_ylabel("gCO2/kWh")
    ax_ci.set_title("carbon intensity, offered load and chosen configuration" if step_rates
                    else "carbon intensity and chosen configuration")
    if step_rates:
        ax_load = axes[1]
        ax_load.step([*hours, len(ci)], [*step_rates, step_rates[-1]], where="post", color="black", label="offered (mean)")
        for name in names:
            sized = [plan.rate_rps for plan in runs[name].plans]
            if any(abs(r - m) > 1e-6 * max(m, 1.0) for r, m in zip(sized, step_rates)):
                ax_load.step([*hours, len(ci)], [*sized, sized[-1]], where="post", lw=0.9, label=f"{name}: sized for")
        ax_load.set_ylabel("req/s")
        ax_load.legend(fontsize=7, ncol=3)
    cmap = plt.get_cmap("tab20")
    legend: dict[str, int] = {}
    for row, name in enumerate(names):  # every deployment, re-plans within a step included
        times = [t / step_s for t, _ in runs[name].timeline] + [len(ci)]
        for (t, plan), end in zip(runs[name].timeline, times[1:]):
            k = legend.setdefault(label(plan), len(legend))
            ax_cfg.broken_barh([(t / step_s, end - t / step_s)], (row - 0.4, 0.8), color=cmap(k % 20))
    ax_cfg.set_yticks(range(len(names)), names)
    ax_cfg.set_xlabel("step (hour of the carbon trace)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(k % 20)) for k in legend.values()]
    fig.legend(handles, [t if len(t) < 70 else t[:67] + "…" for t in legend], loc="lower center", fontsize=7,
               ncol=1 if len(legend) < 6 else 2, bbox_to_anchor=(0.5, -0.02 - 0.03 * min(len(legend), 12)))
    p1 = out_dir / "carbon_config.png"
    fig.savefig(p1, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [p1, plot_carbon_per_step(out_dir, {name: runs[name].summary["hourly_carbon_g"] for name in names})]


def plot_carbon_per_step(out_dir: Path, carbon: dict[str, list[float]]) -> Path:
    """Carbon per step of each policy (one service's or the cluster's), on one axis."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(11, 4))
    for name, grams in carbon.items():
        ax.plot(range(len(grams)), grams, label=name)
    ax.set_xlabel("step (hour of the carbon trace)")
    ax.set_ylabel("gCO2 per step")
    ax.set_title("carbon per step by policy")
    ax.legend()
    path = out_dir / "carbon_per_hour.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
