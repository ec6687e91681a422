"""Capacity no service needs, given back to the Ray cluster: which slices are free, and holding the rest.

Why a fixed pool with placeholders: Ray cannot add or change a custom resource on a running node
(there is no public API for it in Ray 2.x; `ray start --resources` is read once), so a GPU node
advertises at start a pool `clover_mig_slice` = the compute slices of its GPUs (7 per H100), and
its agent *holds* every unit Clover needs with placement groups. What it does not hold is free for
any Ray task or actor that asks for `resources={"clover_mig_slice": k}`; Ray then schedules it on
a node with k free units, and the task asks that node's agent which slices it may use
(`free_slices()`, or `free_slices_here()` below).

Why one single-unit placement group per held unit: a placement group reserves resources without a
process (a placeholder actor would cost a worker process each), is created asynchronously (one that
cannot be placed yet is *pending* and never blocks the agent), and Ray places a pending one by
itself the moment the units it waits for are released, so Clover gets its capacity back without
polling. Single units make the holding grow and shrink by exactly the difference (a group cannot be
resized) and let part of it be placed while other work still holds the rest. The groups are named
after the node (`clover-hold-<node>-<i>`) and detached: groups that fate-share with their creator
are removed by Ray some time after the agent crashes, even when Ray restarts it, so the restarted
agent (or one `gpu-node setup` re-creates) adopts the detached ones by name and nothing is freed
or held twice in between.

What Clover needs (`wanted`): every unit of the node's GPUs except the free slices', where a slice
is free when it exists, no slice the controller claims overlaps it (the claim is the planned
replicas' slices plus the slices replicas still run on, so a slice about to be re-partitioned is
taken back before the MIG change, make-before-break), and no live lease holds it. Capacity in no
MIG instance is held too: no task could use it without re-partitioning.

Serving is unaffected: replicas never request `clover_mig_slice` (they are pinned by
`clover_node_<node>`), so a pool held by other work can never make a replica unplaceable.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from configs.cluster import REPLICA_PREFIX, SLICE_RESOURCE, node_resource
from gpu_node.records import FreeSlice
from mig.leases import LEASE_TTL_S, RENEW_EVERY_S
from mig.placement import compute_slices_of, gpu_type_of, resolve_profile
from mig.types import GpuInfo, GpuInstance, Layout, Placement, canonical

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.util.placement_group import PlacementGroup

    from gpu_node.devices import AgentConfig

CLAIMS_FILE = "claims.json"
CLAIMS_VERSION = 1
PLACED = "CREATED"  # a placement group's state once its bundle is reserved on the node
NODE_SHARE = 0.001  # of `clover_node_<node>` per group: what pins it to its node
AGENT_TIMEOUT_S = 30.0  # longest wait for the node agent in a borrower's calls

log = logging.getLogger(__name__)


def gpu_units(gpu: GpuInfo) -> int:
    """Units of the pool one GPU stands for: its compute slices (0 for a type the catalog lacks)."""
    try:
        return gpu_type_of(gpu.gpu_type).compute_slices
    except KeyError:
        return 0


def node_units(gpus: list[GpuInfo]) -> int:
    """The pool a node advertises at `ray start`."""
    return sum(gpu_units(g) for g in gpus)


def slice_units(cfg: AgentConfig) -> int:
    """The pool of the node `cfg` describes, before its agent starts (`gpu-node setup`, or a local
    cluster acting as that node): every GPU its partition backend lists."""
    from gpu_node.devices import partition_backend
    from mig.leases import LeaseBook

    return node_units(partition_backend(cfg, LeaseBook()).list_gpus())


def _slots(start: int, size: int) -> set[int]:
    return set(range(start, start + size))


def is_free(gpu: GpuInfo, inst: GpuInstance, claimed: Layout, leased: set[int]) -> bool:
    """True when no claimed slice overlaps `inst` (memory slots) and no live lease holds it."""
    if inst.gi_id in leased:
        return False
    mine = _slots(inst.start, inst.size)
    return not any(mine & _slots(p.start, resolve_profile(gpu.gpu_type, p.profile).size) for p in claimed)


def free_slice(gpu: GpuInfo, inst: GpuInstance, env: dict[str, str]) -> FreeSlice:
    return FreeSlice(gpu.index, inst.gi_id, inst.profile, inst.start, compute_slices_of(inst.profile), inst.uuid, env)


def decode_claims(doc: dict) -> dict[int, Layout]:
    return {int(g): canonical([Placement.from_json(p) for p in ps]) for g, ps in doc.get("gpus", {}).items()}


def encode_claims(claims: dict[int, Layout]) -> dict:
    return {"gpus": {str(g): [p.to_json() for p in ps] for g, ps in sorted(claims.items())}}


def replace_claims(state: dict[int, Layout], new: Mapping[int, Layout]) -> None:
    """Inside a claims-file transaction: the controller's claim replaces the previous one whole."""
    state.clear()
    state.update({g: canonical(list(ps)) for g, ps in new.items()})


class PlacementGroupHolder:
    """Holds units of the node's pool so that other Ray work cannot take them: one single-unit
    placement group per held unit, pinned to the node (see the module docstring)."""

    def __init__(self, node: str, advertised: int) -> None:
        from ray.util.placement_group import get_placement_group, placement_group_table

        self.advertised = advertised
        self._node = node
        self._names = [f"clover-hold-{node}-{i}" for i in range(advertised)]
        live = {v["name"] for v in placement_group_table().values() if v["state"] != "REMOVED"}
        self._groups: dict[str, PlacementGroup] = {n: get_placement_group(n) for n in self._names if n in live}

    def _placed(self) -> set[str]:
        from ray.util.placement_group import placement_group_table

        table = placement_group_table()
        return {n for n, g in self._groups.items() if table.get(g.id.hex(), {}).get("state") == PLACED}

    def hold(self, units: int) -> tuple[int, int]:
        """Hold `units` (at most `advertised`), asynchronously; returns (placed, pending) now."""
        from ray.util.placement_group import placement_group, remove_placement_group

        units = max(0, min(units, self.advertised))
        if len(self._groups) > units:  # give back pending groups first: they hold nothing yet
            placed = self._placed()
            order = sorted(self._groups, key=lambda n: (n in placed, -self._names.index(n)))
            for name in order[:len(self._groups) - units]:
                remove_placement_group(self._groups.pop(name))
        for name in self._names:
            if len(self._groups) >= units:
                break
            if name not in self._groups:
                self._groups[name] = placement_group(
                    [{SLICE_RESOURCE: 1, node_resource(self._node): NODE_SHARE}], strategy="STRICT_PACK", name=name,
                    lifetime="detached")
        placed = len(self._placed())
        return placed, len(self._groups) - placed


def ray_holder(node: str, ray_node_id: str) -> PlacementGroupHolder | None:
    """The holder of this agent's node, or None outside Ray or where the node advertises no pool."""
    import ray

    if not ray_node_id:
        return None
    mine = next((n for n in ray.nodes() if n["NodeID"] == ray_node_id), None)
    advertised = int(mine["Resources"].get(SLICE_RESOURCE, 0)) if mine else 0
    return PlacementGroupHolder(node, advertised) if advertised else None


def _agent_here() -> ActorHandle | None:
    """The node agent of the Ray node this task or actor runs on (None: no Clover node here)."""
    import ray

    from gpu_node.agent import find_agents

    here = ray.get_runtime_context().get_node_id()
    return next((a for a in find_agents().values() if ray.get(a.info.remote()).ray_node_id == here), None)


def free_slices_here() -> list[FreeSlice]:
    """For a Ray task that was given `clover_mig_slice` units: the free slices of the node it runs on."""
    import ray

    agent = _agent_here()
    return [] if agent is None else list(ray.get(agent.free_slices.remote()))


class SliceLeaseLost(RuntimeError):
    """A borrowed slice's lease could not be kept: the slice may have been re-partitioned."""


@contextmanager
def borrowed_slice(compute_slices: int, owner: str) -> Iterator[FreeSlice]:
    """For a Ray task or actor given `clover_mig_slice` units: lease a free slice of at least
    `compute_slices` on the node it runs on while the block runs (run the work with the slice's
    `env`, e.g. its CUDA_VISIBLE_DEVICES).

    Why a lease as well as the Ray units: the units say how much capacity the work took, not
    which slice. The lease names the slice, so no other borrower gets it, the agent no longer
    reports it free, and the node cannot re-partition it under the work (a MIG destroy of a leased
    slice fails and the controller's step is rolled back, as for one in use by another client).
    It is renewed every RENEW_EVERY_S by a thread and released when the block ends; a borrower
    that dies without releasing it stops renewing, and after LEASE_TTL_S the lease is stale and
    blocks nothing. `owner` names the work in `gpu-node mig leases` and run.log; the controller
    never releases it (it only sweeps its own replicas' leases, named `replica-...`).

    A renewal that fails (the agent restarting) is logged and tried again; a lease found gone
    (lapsed, then dropped) is not taken again, since its GI id may name a new slice by then: the
    block's end raises SliceLeaseLost. Raises LookupError when this Ray node has no Clover agent
    or no free slice fits, ValueError for an owner name Clover's replicas use."""
    import ray

    if not owner or owner.startswith(REPLICA_PREFIX):
        raise ValueError(f"borrowed_slice owner {owner!r}: give a non-empty name that does not start with "
                         f"{REPLICA_PREFIX!r} (Clover's replicas' leases are named so and swept by the controller)")
    agent = _agent_here()
    if agent is None:
        raise LookupError("no Clover node agent on this Ray node: ask for `clover_mig_slice` units so that Ray "
                          "schedules the work on a GPU node")
    chosen = ray.get(agent.borrow_slice.remote(compute_slices, owner), timeout=AGENT_TIMEOUT_S)
    if chosen is None:
        raise LookupError(f"no free slice of {compute_slices} or more compute slices on node "
                          f"{ray.get(agent.info.remote(), timeout=AGENT_TIMEOUT_S).node}: ask for as many "
                          "`clover_mig_slice` units as the slice needs, so that Ray waits for a node that has them free")
    done, lost = threading.Event(), threading.Event()

    def renew() -> None:
        while not done.wait(RENEW_EVERY_S):
            try:
                kept = ray.get(agent.renew_lease.remote(chosen.gpu, chosen.gi_id, owner), timeout=AGENT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - an agent restarting: the next period tries again
                log.warning("lease of %s on GPU %d GI %d not renewed (%s); trying again", owner, chosen.gpu,
                            chosen.gi_id, exc)
                continue
            if not kept:
                lost.set()
                return

    renewer = threading.Thread(target=renew, name=f"lease-{owner}", daemon=True)
    renewer.start()
    failed = False
    try:
        yield chosen
    except BaseException:
        failed = True
        raise
    finally:
        done.set()
        renewer.join(timeout=AGENT_TIMEOUT_S)
        try:
            ray.get(agent.release_lease.remote(chosen.gpu, chosen.gi_id, owner), timeout=AGENT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - not released: it lapses after LEASE_TTL_S by itself
            log.warning("lease of %s on GPU %d GI %d not released (%s); it lapses by itself", owner, chosen.gpu,
                        chosen.gi_id, exc)
    if lost.is_set() and not failed:
        raise SliceLeaseLost(f"{owner}: the lease on GPU {chosen.gpu} GI {chosen.gi_id} ({chosen.profile}) lapsed "
                             f"while the work ran (no renewal for {LEASE_TTL_S:.0f} s); the slice may have been re-partitioned "
                             "under it")
