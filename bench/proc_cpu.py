"""CPU seconds used by this process's descendants, grouped by role (Linux /proc).

Why: on a machine with few cores, closed-loop throughput is (cores in use) / (CPU per request),
so the CPU each serving process spends per request explains a throughput or latency ratio
better than any timing. Every process of a local Ray cluster (GCS, raylet, workers) descends
from the driver that started it, so walking the process tree from it counts this bench's
processes only, never those of other Ray clusters on the same machine.
"""
from __future__ import annotations

import os
import resource
from collections import Counter
from pathlib import Path

# The process title a Ray worker sets (its command line) starts with one of these; anything
# else (GCS, raylet, dashboard, Serve controller, idle workers) is "rest of Ray".
ROLES = (
    ("ray::ProxyActor", "proxy"),
    ("ray::ServeReplica:clover:", "ingress"),
    ("ray::ServeReplica:replica-", "slice replicas"),
    ("ray::ServeReplica:plain:", "plain app"),
    ("ray::NodeAgent", "node agent"),
    ("ray::ControlBus", "control bus"),
)
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds), or None if the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "rest of Ray"
    return next((role for prefix, role in ROLES if cmd.startswith(prefix)), "rest of Ray")


def descendants_cpu_s(root: int | None = None) -> Counter[str]:
    """CPU seconds so far of every live descendant of `root` (default: this process), by role."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: Counter[str] = Counter()
    todo = list(children.get(root or os.getpid(), []))
    while todo:
        pid = todo.pop()
        out[_role(pid)] += stats[pid][1]
        todo.extend(children.get(pid, []))
    return out


def own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children: the load tool (in-process httpx, or
    wrk, which `subprocess.run` waits for)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
