"""Plots of `controller simulate --plot` (matplotlib, Agg): CI with the chosen configuration
over time, and carbon per hour by policy."""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def plot_runs(out_dir: Path, ci: list[float], runs: dict, label: Callable) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    hours = list(range(len(ci)))
    names = list(runs)
    fig, (ax_ci, ax_cfg) = plt.subplots(2, 1, figsize=(11, 3 + 0.45 * len(names)), sharex=True,
                                        gridspec_kw={"height_ratios": [2, max(1, len(names) * 0.5)]})
    ax_ci.step([*hours, len(ci)], [*ci, ci[-1]], where="post", color="black")
    ax_ci.set_ylabel("gCO2/kWh")
    ax_ci.set_title("carbon intensity and chosen configuration")
    cmap = plt.get_cmap("tab20")
    legend: dict[str, int] = {}
    for row, name in enumerate(names):
        for h, plan in enumerate(runs[name].plans):
            k = legend.setdefault(label(plan), len(legend))
            ax_cfg.broken_barh([(h, 1)], (row - 0.4, 0.8), color=cmap(k % 20))
    ax_cfg.set_yticks(range(len(names)), names)
    ax_cfg.set_xlabel("hour")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(k % 20)) for k in legend.values()]
    fig.legend(handles, [t if len(t) < 70 else t[:67] + "…" for t in legend], loc="lower center", fontsize=7,
               ncol=1 if len(legend) < 6 else 2, bbox_to_anchor=(0.5, -0.02 - 0.03 * min(len(legend), 12)))
    p1 = out_dir / "carbon_config.png"
    fig.savefig(p1, dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 4))
    for name in names:
        ax.plot(hours, runs[name].summary["hourly_carbon_g"], label=name)
    ax.set_xlabel("hour")
    ax.set_ylabel("gCO2 per hour")
    ax.set_title("carbon per hour by policy")
    ax.legend()
    p2 = out_dir / "carbon_per_hour.png"
    fig.savefig(p2, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [p1, p2]
