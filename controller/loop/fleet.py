"""The GPU nodes as the loop sees them, through their node agents on Ray (the `Fleet` port).

Agents are looked up by name on every call (`clover-agent-<node>` in namespace "clover"), never
cached: an agent that Ray restarted, or that `gpu-node setup` re-created, is found again within
one reconcile tick. Calls are issued to all agents at once and bounded in time, so one agent that
does not answer costs one timeout per tick, not one per call.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TypeVar

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from controller.loop.ports import FleetEnergy, NodeLostError
from controller.loop.view import FleetView, GpuHandle, GpuState
from gpu_node.agent import find_agents
from gpu_node.records import IntervalEnergy, LeaseRecord, MigOpRecord, NodeInfo, Reservation
from mig.types import Layout

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0
MIG_TIMEOUT_S = 300.0


T = TypeVar("T")


def _gather(calls: dict[str, ray.ObjectRef], kind: type[T], timeout_s: float) -> dict[str, T]:
    """Results of calls that finished within `timeout_s`; failed or late ones are left out (logged)."""
    if not calls:
        return {}
    ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=timeout_s)
    done = set(ready)
    out: dict[str, T] = {}
    for node, ref in calls.items():
        if ref not in done:
            log.warning("node agent %s did not answer within %.0fs", node, timeout_s)
            continue
        try:
            value = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a dead or restarting agent: its node is missing this time
            log.warning("node agent %s failed: %s", node, exc)
            continue
        if not isinstance(value, kind):
            raise TypeError(f"node agent {node} answered {type(value).__name__}, expected {kind.__name__}: "
                            "the node runs another Clover version; run `gpu-node setup` there again")
        out[node] = value
    return out


class RayFleet:
    def __init__(self, only_nodes: frozenset[str] | None = None, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._only = only_nodes  # restrict to these nodes (several deployments sharing one cluster)
        self._timeout = timeout_s
        self._started: dict[str, float] = {}  # node -> agent start time last seen
        self._agents: dict[str, ActorHandle] = {}
        self._read_since: dict[str, float | None] = {}  # node -> agent start time at the last energy reading

    def _lookup(self) -> dict[str, ActorHandle]:
        agents = find_agents()
        if self._only is not None:
            agents = {n: a for n, a in agents.items() if n in self._only}
        self._agents = agents
        return agents

    def _agent(self, node: str) -> ActorHandle:
        if node not in self._agents:
            self._lookup()
        return self._agents[node]

    def observe(self) -> FleetView:
        agents = self._lookup()
        infos = _gather({n: a.info.remote() for n, a in agents.items()}, NodeInfo, self._timeout)
        gpus: dict[str, GpuState] = {}
        restarted = set()
        for node, info in infos.items():
            if node in self._started and self._started[node] != info.started_at:
                restarted.add(node)
            self._started[node] = info.started_at
            for g in info.gpus:
                gpus[g.gpu_id] = GpuState(GpuHandle(g.gpu_id, node, g.index, g.gpu_type), g.enabled, g.slices)
        missing = frozenset(n for n in self._started if n not in infos)
        return FleetView(gpus, missing, frozenset(restarted))

    def apply_layout(self, gpu: GpuHandle, layout: Layout) -> list[MigOpRecord]:
        try:
            return ray.get(self._agent(gpu.node).apply_layout.remote(gpu.index, list(layout)), timeout=MIG_TIMEOUT_S)
        except (RayActorError, KeyError) as exc:
            raise NodeLostError(f"node agent {gpu.node} is gone: {type(exc).__name__}") from exc

    def interval_energy(self) -> FleetEnergy:
        agents = self._lookup()
        got = _gather({n: a.interval_energy.remote() for n, a in agents.items()}, IntervalEnergy, self._timeout)
        notes: list[str] = []
        for node in got:
            started = self._started.get(node)
            if node in self._read_since and self._read_since[node] != started:
                # the agent restarted mid-interval: its counter covers only part of it
                notes.append(f"node {node}: agent restarted during the interval; its energy is partial")
            self._read_since[node] = started
        notes += [f"node {node}: agent did not answer; its GPUs' energy is modelled"
                  for node in sorted(set(self._started) - set(got))]
        energy = FleetEnergy.of(got)
        return replace(energy, estimated=energy.estimated or bool(notes), notes=(*energy.notes, *notes))

    def leases(self) -> dict[str, list[LeaseRecord]]:
        agents = self._lookup()
        return _gather({n: a.leases.remote() for n, a in agents.items()}, list, self._timeout)

    def release_leases(self, node: str, owners: list[str]) -> list[LeaseRecord]:
        return ray.get(self._agent(node).release_leases.remote(owners), timeout=self._timeout)

    def claim(self, claims: Mapping[str, Mapping[int, Layout]]) -> dict[str, Reservation]:
        agents = {n: a for n, a in self._agents.items() if n in claims}  # those the last observe found
        return _gather({n: a.claim.remote(dict(claims[n])) for n, a in agents.items()}, Reservation, self._timeout)
