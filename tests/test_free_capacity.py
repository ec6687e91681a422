"""Capacity no service needs is given back to Ray: which slices are free (in-process), and on a real
Ray cluster with a simulated GPU node, the `clover_mig_slice` units the agent holds and leaves free.

The Ray test drives the agent through the controller's own adapter (`RayFleet.claim` with the
claim the reconciler computes, `claims_of`): a plan that leaves a GPU idle lets a Ray task that
asks for its units run on that node and learn the free slice; when the plan takes it back, the
agent's holding waits while other work has the units, and grows back by itself once they are freed.
A task borrows a free slice by name (`borrowed_slice`: a lease), so no other work gets it.
"""
from __future__ import annotations

import time

import pytest

from gpu_node.agent import NodeAgent
from gpu_node.devices import AgentConfig
from mig.placement import parse_layout
from mig.types import Placement

T = "H100-80GB"
P3A, P3B, P7 = Placement("3g.40gb", 0), Placement("3g.40gb", 4), Placement("7g.80gb", 0)


def _agent(tmp_path) -> NodeAgent:
    agent = NodeAgent(AgentConfig("n0", gpus=2, state_dir=str(tmp_path / "n0")))
    agent.apply_layout(0, list(parse_layout("3g@0,3g@4", T)))
    agent.apply_layout(1, list(parse_layout("7g@0", T)))
    return agent


def _free(agent: NodeAgent) -> list[tuple[int, str, int]]:
    return [(s.gpu, s.profile, s.start) for s in agent.free_slices()]


def test_free_slices_follow_the_claim_and_the_leases(tmp_path):
    agent = _agent(tmp_path)
    assert _free(agent) == [(0, "3g.40gb", 0), (0, "3g.40gb", 4), (1, "7g.80gb", 0)]  # nothing claimed yet
    r = agent.claim({0: (P3A,)})
    assert [(s.gpu, s.profile, s.start) for s in r.free] == [(0, "3g.40gb", 4), (1, "7g.80gb", 0)]
    assert (r.wanted, r.free_units, r.advertised, r.held) == (4, 10, 0, 0)  # no pool outside Ray: nothing held
    assert r.free[1].env == {"CUDA_VISIBLE_DEVICES": r.free[1].uuid} and r.free[1].compute_slices == 7
    # the plan wants a 3g slice where the 7g one is: overlapping, so it is Clover's again before any MIG change
    agent.claim({0: (P3A,), 1: (P3A,)})
    assert _free(agent) == [(0, "3g.40gb", 4)]
    gi = next(s.gi_id for s in agent.free_slices())
    agent.acquire_lease(0, gi, "replica-left-over")  # a replica still on it: not free either
    assert _free(agent) == [] and agent.reservation().wanted == 14
    again = NodeAgent(AgentConfig("n0", gpus=2, state_dir=str(tmp_path / "n0")))  # restarted: same claim
    assert again.reservation().wanted == 14
    again.release_leases(["replica-left-over"])
    assert _free(again) == [(0, "3g.40gb", 4)]


def test_a_borrower_gets_the_smallest_free_slice_that_fits_and_no_one_else_does(tmp_path):
    agent = _agent(tmp_path)
    agent.claim({0: (P3A,)})  # free: gpu0's 3g@4 and gpu1's 7g
    assert agent.borrow_slice(8, "too-big") is None
    first = agent.borrow_slice(2, "job-a")
    assert (first.gpu, first.profile, first.start) == (0, "3g.40gb", 4)
    second = agent.borrow_slice(2, "job-b")  # the 3g slice is leased: the next one that fits
    assert (second.gpu, second.profile) == (1, "7g.80gb")
    assert agent.borrow_slice(1, "job-c") is None and _free(agent) == []
    assert agent.reservation().wanted == 14  # borrowed slices are not free: the pool says so
    assert agent.renew_lease(first.gpu, first.gi_id, "job-a")
    agent.release_lease(first.gpu, first.gi_id, "job-a")
    assert _free(agent) == [(0, "3g.40gb", 4)]
    # a lease that is gone is not taken again by a renewal: its GI id may name a new slice by now
    assert not agent.renew_lease(first.gpu, first.gi_id, "job-a") and _free(agent) == [(0, "3g.40gb", 4)]


@pytest.mark.parametrize("owner", ["", "replica-n0-g0-3g40gbs4-yolo-yolo11n-b1"])
def test_a_borrower_may_not_take_a_name_clover_sweeps(owner):
    from gpu_node.free_capacity import borrowed_slice

    with pytest.raises(ValueError, match="does not start with 'replica-'"):
        with borrowed_slice(1, owner):
            pass


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from ray.cluster_utils import Cluster

    from configs.cluster import agent_name, node_resources, ray_env
    from gpu_node.setup_cmd import bring_up_agent

    ray_env()
    tmp = tmp_path_factory.mktemp("freecap")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    gpu_node = c.add_node(num_cpus=1, resources=node_resources("gpuA", 14))  # what `gpu-node setup` advertises
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="clover", log_to_driver=False)
    bring_up_agent(AgentConfig("gpuA", gpus=2, state_dir=str(tmp / "gpuA")), ray_node_id=gpu_node.node_id)
    agent = ray.get_actor(agent_name("gpuA"), namespace="clover")
    ray.get([agent.apply_layout.remote(0, list(parse_layout("3g@0,3g@4", T))),
             agent.apply_layout.remote(1, list(parse_layout("7g@0", T)))])
    yield {"agent": agent, "ray_node_id": gpu_node.node_id}
    ray.kill(agent)  # detached: it outlives the driver unless killed
    ray.shutdown()
    c.shutdown()


def _claim(plan_slices: dict[int, list[tuple[Placement, str | None]]]):
    """What the reconciler sends for a plan of node gpuA (no replicas running)."""
    from controller.loop.capacity import claims_of
    from controller.loop.fleet import RayFleet
    from controller.planning.plan import GpuPlan, Plan, SliceAssignment

    fleet = RayFleet()
    gpus = tuple(GpuPlan(f"gpuA/gpu{i}", T, tuple(SliceAssignment(p, v) for p, v in s)) for i, s in plan_slices.items())
    return fleet.claim(claims_of(Plan("efficientnet", gpus), fleet.observe(), []))["gpuA"]


def _settled(agent, held: int, timeout_s: float = 20.0):
    """The agent's reservation once `held` units are placed (placement groups are created asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = ray.get(agent.reservation.remote())
        if r.held == held or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


@ray.remote(num_cpus=0, resources={"clover_mig_slice": 3})
def run_on_a_borrowed_slice() -> tuple[tuple[int, str, str], list[tuple[int, str, int]], list[float]]:
    """A Ray task as a user would write it: borrow a slice, run with its environment."""
    from configs.cluster import agent_name
    from gpu_node.free_capacity import borrowed_slice, free_slices_here
    from mig.leases import RENEW_EVERY_S

    agent = ray.get_actor(agent_name("gpuA"), namespace="clover")

    def renewed() -> list[float]:
        return [x.renewed_at for x in ray.get(agent.leases.remote()) if x.owner == "nightly-batch" and not x.stale]

    with borrowed_slice(3, "nightly-batch") as s:
        free_meanwhile = [(x.gpu, x.profile, x.start) for x in free_slices_here()]
        first = renewed()
        time.sleep(RENEW_EVERY_S + 1.0)  # the work runs; the lease is renewed meanwhile
        return (s.gpu, s.profile, s.env["CUDA_VISIBLE_DEVICES"]), free_meanwhile, [*first, *renewed()]


@pytest.mark.slow
def test_a_task_borrows_a_free_slice_and_gives_it_back(node):
    agent = node["agent"]
    _claim({0: [(P3A, "b0"), (P3B, None)], 1: [(P7, None)]})  # gpu0's 3g@4 and gpu1 idle
    _settled(agent, 4)
    (gpu, profile, visible), free_meanwhile, renewed = ray.get(run_on_a_borrowed_slice.remote(), timeout=60)
    assert (gpu, profile) == (0, "3g.40gb") and visible.startswith("MIG-")  # the smallest that fits
    assert free_meanwhile == [(1, "7g.80gb", 0)]  # leased: no longer free to anyone else
    assert len(renewed) == 2 and renewed[1] > renewed[0]  # one live lease, renewed while the work ran
    assert [(s.gpu, s.profile) for s in ray.get(agent.free_slices.remote())] == [(0, "3g.40gb"), (1, "7g.80gb")]
    assert not [x for x in ray.get(agent.leases.remote()) if x.owner == "nightly-batch"]  # released at the end
    assert _settled(agent, 4).wanted == 4  # and the pool's units Clover held for it while leased are given back
    deadline = time.monotonic() + 20
    while ray.available_resources().get("clover_mig_slice") != 10 and time.monotonic() < deadline:
        time.sleep(0.2)  # Ray reports units freed by removed placement groups a little later
    assert ray.available_resources().get("clover_mig_slice") == 10


@ray.remote(num_cpus=0, resources={"clover_mig_slice": 7})
def borrow_a_gpu() -> tuple[str, list[tuple[int, str, int, str]]]:
    from gpu_node.free_capacity import free_slices_here

    return ray.get_runtime_context().get_node_id(), [(s.gpu, s.profile, s.start, s.uuid) for s in free_slices_here()]


@ray.remote(num_cpus=0, resources={"clover_mig_slice": 7})
class Borrower:
    def ping(self) -> str:
        return "holding 7 units"


@pytest.mark.slow
def test_idle_capacity_goes_to_other_ray_work_and_comes_back(node):
    agent = node["agent"]
    # the plan serves on gpu0's first 3g slice and leaves the other 3g slice and the whole of gpu1 idle
    r = _claim({0: [(P3A, "b0"), (P3B, None)], 1: [(P7, None)]})
    assert (r.advertised, r.wanted, r.free_units) == (14, 4, 10)  # 3g@0 + gpu0's unpartitioned compute slice
    r = _settled(agent, 4)
    assert (r.held, r.pending) == (4, 0) and ray.available_resources()["clover_mig_slice"] == 10

    where, free = ray.get(borrow_a_gpu.remote(), timeout=30)  # scheduled by Ray on the node with free units
    assert where == node["ray_node_id"]
    assert [(g, p, s) for g, p, s, _ in free] == [(0, "3g.40gb", 4), (1, "7g.80gb", 0)]
    assert all(uuid.startswith("MIG-") for *_, uuid in free)

    borrower = Borrower.remote()  # other work holds gpu1's 7 units ...
    ray.get(borrower.ping.remote(), timeout=30)
    r = _claim({0: [(P3A, "b0"), (P3B, None)], 1: [(P7, "b3")]})  # ... when the plan takes gpu1 back
    assert (r.wanted, r.free_units) == (11, 3)
    r = _settled(agent, 7)  # units are alike to Ray: the 3 still free are taken, 4 wait for the borrower's
    assert (r.held, r.pending) == (7, 4) and "clover_mig_slice" not in ray.available_resources()
    assert ray.get(agent.ping.remote(), timeout=5) == "gpuA"

    ray.kill(borrower)  # the units are freed: Ray places Clover's pending holding by itself
    r = _settled(agent, 11)
    assert (r.held, r.pending) == (11, 0) and ray.available_resources()["clover_mig_slice"] == 3
    late = borrow_a_gpu.remote()  # 7 units are no longer free: other work waits now
    assert ray.wait([late], timeout=2.0)[0] == []
    ray.cancel(late)


@pytest.mark.slow
def test_a_restarted_agent_adopts_its_holding(node):
    from ray.util.placement_group import placement_group_table

    agent = node["agent"]
    before = _settled(agent, 11).held
    ray.kill(agent, no_restart=False)  # a crash: Ray restarts it
    deadline = time.monotonic() + 30
    while True:
        try:
            r = ray.get(agent.reservation.remote(), timeout=10)
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert (r.held, r.pending) == (before, 0) and ray.available_resources()["clover_mig_slice"] == 3
    table = placement_group_table()
    live = [g for g in table.values() if g["state"] != "REMOVED"]
    assert len(live) == before, [(g["name"], g["state"]) for g in table.values()]  # adopted by name, not created twice
