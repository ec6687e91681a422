"""Plots of `controller simulate --service a,b --plot` (matplotlib, Agg): on one time axis the
carbon intensity, each service's offered load, and for every policy how much of the cluster each
service holds, step by step; then the cluster's carbon per step by policy.

What several services add to one service's plots is the split of the GPUs between them: the
joint plan moves slices from one service to another as carbon and load change, a static split
cannot. So each policy gets a panel of compute slices held per service (stacked, out of the
cluster's), rather than one service's configuration labels."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from controller.planning.joint_replay import JointRun
from controller.planning.plan import Plan
from controller.planning.simulate_plot import plot_carbon_per_step, pyplot
from mig.placement import compute_slices_of


def slices_held(plans: Sequence[Plan]) -> list[int]:
    """Compute slices that carry one of the service's replicas, per step (its view of each plan:
    other services' slices idle)."""
    return [sum(compute_slices_of(s.placement.profile) for _, s in plan.replicas()) for plan in plans]


def plot_joint(out_dir: Path, ci: Sequence[float], runs: Mapping[str, JointRun],
               step_rates: Mapping[str, Sequence[float]], cluster_slices: int) -> list[Path]:
    """`step_rates`: each service's offered mean rate per step; `cluster_slices`: the compute
    slices of all the GPUs (the top of every policy's panel)."""
    plt = pyplot()

    out_dir.mkdir(parents=True, exist_ok=True)
    services, names = list(step_rates), list(runs)
    edges = list(range(len(ci) + 1))
    fig, axes = plt.subplots(2 + len(names), 1, figsize=(11, 4 + 1.3 * len(names)), sharex=True,
                             gridspec_kw={"height_ratios": [2, 2, *[1.3] * len(names)]})
    colors = {svc: plt.get_cmap("tab10")(k % 10) for k, svc in enumerate(services)}
    axes[0].step(edges, [*ci, ci[-1]], where="post", color="black")
    axes[0].set_ylabel("gCO2/kWh")
    axes[0].set_title("carbon intensity, offered load and the compute slices each service holds")
    for svc, rates in step_rates.items():
        axes[1].step(edges, [*rates, rates[-1]], where="post", color=colors[svc], label=svc)
    axes[1].set_ylabel("req/s (mean)")
    axes[1].legend(fontsize=7, ncol=len(services))
    for ax, name in zip(axes[2:], names):
        below = [0] * len(ci)
        for svc in services:
            above = [b + n for b, n in zip(below, slices_held(runs[name].plans[svc]))]
            ax.fill_between(edges, [*below, below[-1]], [*above, above[-1]], step="post", color=colors[svc], lw=0)
            below = above
        ax.set_ylim(0, cluster_slices)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("step (hour of the carbon trace)")
    path = out_dir / "services_slices.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [path, plot_carbon_per_step(out_dir, {name: run.hourly_carbon_g for name, run in runs.items()})]
