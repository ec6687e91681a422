"""The serving bench's results: paired runs, the markdown tables and the plot (pure, no Ray).

Each Clover run is paired with a plain-app run measured right before it at the same
concurrency, and its ratios are taken against that run, so that drift in other load on a
shared machine cancels out. CPU per request by process role explains the ratios on few cores.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.http_load import LoadResult

P50_TARGET = 1.3  # issue 10: p50 ≤ 1.3 × the plain app's at one ingress replica
CPU_ROLES = ("proxy", "ingress", "slice replicas", "plain app", "node agent", "control bus", "rest of Ray", "load tool")


Json = dict[str, object]


@dataclass(frozen=True)
class Meta:
    """How and where the bench ran (the report's header)."""

    quick: bool
    date: str
    cores: int
    load_before: float  # 1-minute load average: other work on a shared machine
    load_after: float
    wall_s: float
    tool: str
    seconds: float  # per run
    warm_s: float  # per setup
    body_bytes: int
    service_ms: float
    work: str  # the simulated variant
    replicas: str  # what Clover routes over

    def to_json(self) -> Json:
        return asdict(self)


@dataclass(frozen=True)
class Run:
    """One closed-loop run and the CPU milliseconds each process role spent per request in it."""

    load: LoadResult
    cpu_ms: dict[str, float]

    @property
    def cpu_total_ms(self) -> float:
        return sum(v for k, v in self.cpu_ms.items() if k != "load tool")

    def to_json(self) -> Json:
        return {**self.load.to_json(), "cpu_ms_per_request": self.cpu_ms}


@dataclass(frozen=True)
class Pair:
    """Clover with `ingress` replicas and the plain app, measured back to back at one concurrency."""

    ingress: int
    plain: Run
    clover: Run

    @property
    def connections(self) -> int:
        return self.clover.load.connections

    def ratio(self, field: str) -> float:
        return getattr(self.clover.load, field) / getattr(self.plain.load, field)

    def to_json(self) -> Json:
        return {"ingress_replicas": self.ingress, "plain": self.plain.to_json(), "clover": self.clover.to_json()}


def plain_median(pairs: list[Pair], c: int) -> tuple[float, float, float]:
    """The plain app at `c` connections: median p50, p99 and req/s over its runs."""
    runs = [p.plain.load for p in pairs if p.connections == c]
    return (statistics.median(r.p50_ms for r in runs), statistics.median(r.p99_ms for r in runs),
            statistics.median(r.rps for r in runs))


def latency_table(pairs: list[Pair], connections: tuple[int, ...]) -> list[str]:
    lines = ["| connections | setup | p50 ms | p99 ms | req/s | errors | p50 × plain | p99 × plain | req/s × plain |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in connections:
        p50, p99, rps = plain_median(pairs, c)
        errors = sum(p.plain.load.errors for p in pairs if p.connections == c)
        lines.append(f"| {c} | plain Serve app | {p50:.1f} | {p99:.1f} | {rps:.0f} | {errors} | 1 | 1 | 1 |")
        for p in (p for p in pairs if p.connections == c):
            k = p.clover.load
            lines.append(f"| {c} | Clover, {p.ingress} ingress | {k.p50_ms:.1f} | {k.p99_ms:.1f} | {k.rps:.0f} | "
                         f"{k.errors} | {p.ratio('p50_ms'):.2f} | {p.ratio('p99_ms'):.2f} | {p.ratio('rps'):.2f} |")
    return lines


def cpu_table(pairs: list[Pair], c: int, cores: int) -> list[str]:
    """CPU ms per request by role at `c` connections: the plain app (paired with one ingress
    replica) and Clover at each ingress count; the ceiling is what `cores` allow at that cost."""
    roles = [r for r in CPU_ROLES if any(run.cpu_ms.get(r, 0.0) >= 0.05 for p in pairs for run in (p.plain, p.clover))]
    at_c = [p for p in pairs if p.connections == c]
    rows = [("plain Serve app", at_c[0].plain)] + [(f"Clover, {p.ingress} ingress", p.clover) for p in at_c]
    lines = [f"| setup ({c} connections) | " + " | ".join(roles) + f" | total (w/o load tool) | {cores}-core ceiling req/s |",
             "|---|" + "---:|" * (len(roles) + 2)]
    for name, run in rows:
        cells = " | ".join(f"{run.cpu_ms.get(r, 0.0):.2f}" for r in roles)
        lines.append(f"| {name} | {cells} | {run.cpu_total_ms:.2f} | {cores * 1000.0 / run.cpu_total_ms:.0f} |")
    return lines


def markdown(pairs: list[Pair], meta: Meta, connections: tuple[int, ...], cpu_c: int) -> str:
    one = [p for p in pairs if p.ingress == min(q.ingress for q in pairs)]
    verdict = ", ".join(f"{p.ratio('p50_ms'):.2f}× at {p.connections}" for p in one)
    met = all(p.ratio("p50_ms") <= P50_TARGET for p in one)
    header = (f"`python -m bench.serving_bench{' --quick' if meta.quick else ''}`, {meta.date}, {meta.cores} cores, "
              f"load average {meta.load_before:.2f} before / {meta.load_after:.2f} after, {meta.wall_s:.0f} s.\n"
              f"Load tool: {meta.tool}; closed loop, {meta.seconds:.0f} s per run after a {meta.warm_s:.0f} s "
              f"warm-up per setup; body: a {meta.body_bytes // 1000} KB JPEG. Work behind both paths: decode + "
              f"{meta.service_ms:.1f} ms of simulated {meta.work} (batch 1); Clover routes over {meta.replicas}.\n"
              "Plain rows: median over its runs at that concurrency (one before each Clover setup); each Clover "
              "ratio is against the plain run measured right before it.")
    target = (f"Target p50 ≤ {P50_TARGET}× plain with one ingress replica: **{'met' if met else 'missed'}** "
              f"({verdict} connections).")
    cpu_intro = (f"CPU milliseconds per request by process (same runs, {cpu_c} connections; every process of "
                 "this bench's Ray cluster, found through the process tree):")
    return "\n".join(["# Serving bench: Clover ingress (1, 2, 4 replicas) vs a plain Serve app", "", header, "",
                      *latency_table(pairs, connections), "", target, "", cpu_intro, "",
                      *cpu_table(pairs, cpu_c, meta.cores), ""])


def plot(pairs: list[Pair], connections: tuple[int, ...], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    series = {"plain Serve app": [plain_median(pairs, c) for c in connections]}
    for n in sorted({p.ingress for p in pairs}):
        runs = {p.connections: p.clover.load for p in pairs if p.ingress == n}
        series[f"Clover, {n} ingress"] = [(runs[c].p50_ms, runs[c].p99_ms, runs[c].rps) for c in connections]
    for i, (ax, label) in enumerate(zip(axes, ("p50 latency (ms)", "p99 latency (ms)", "throughput (req/s)"))):
        for name, values in series.items():
            ax.plot(connections, [v[i] for v in values], marker="o", label=name,
                    linestyle="--" if name.startswith("plain") else "-")
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(connections, [str(c) for c in connections])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Clover ingress vs plain Serve app (same simulated slice work, one run)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
