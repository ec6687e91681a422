"""A node agent that crashes comes back by itself (max_restarts) and knows the node at once (real Ray)."""
import time

import pytest

ray = pytest.importorskip("ray")

from configs.cluster import NAMESPACE, agent_name, ray_env
from gpu_node.agent import AgentConfig, start_agent
from gpu_node.records import NodeInfo
from mig.leases import LeaseBook
from mig.placement import parse_layout
from mig.simulated import SimulatedMigBackend

pytestmark = pytest.mark.slow


def _start_cluster() -> None:
    # address="local": always a private cluster, never one another process on this machine runs
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, num_cpus=1)


@pytest.fixture(scope="module")
def cluster():
    ray_env()
    _start_cluster()
    yield
    ray.shutdown()


def _info_after_restart(agent, before: NodeInfo, timeout_s: float = 120.0) -> NodeInfo:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = ray.get(agent.info.remote(), timeout=30)
            if info.started_at != before.started_at:
                return info
        except ray.exceptions.RayActorError:  # calls in flight while it died or restarts
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"agent did not come back within {timeout_s:.0f} s")
        time.sleep(0.2)


def test_killed_agent_restarts_and_its_view_matches_the_node(cluster, tmp_path):
    cfg = AgentConfig("restart0", gpus=2, state_dir=str(tmp_path / "node"))
    agent = start_agent(cfg, detached=False)
    ops = ray.get(agent.apply_layout.remote(1, list(parse_layout("4g@0,3g@4", "H100-80GB"))))
    assert all(o.ok for o in ops)
    gi = ray.get(agent.info.remote()).gpus[1].slices[0].gi_id
    ray.get(agent.acquire_lease.remote(1, gi, "replica-r"))
    before = ray.get(agent.info.remote())
    pid = ray.get(agent.__ray_call__.remote(lambda self: __import__("os").getpid()))

    ray.kill(agent, no_restart=False)  # the agent's process dies; Ray restarts the actor

    after = _info_after_restart(agent, before)
    assert ray.get(agent.__ray_call__.remote(lambda self: __import__("os").getpid())) != pid
    assert after.started_at > before.started_at
    assert after.gpus == before.gpus  # slices, UUIDs, MIG env: rebuilt from the state file
    backend = SimulatedMigBackend(state_file=tmp_path / "node" / "mig-state.json")
    assert [(s.gi_id, s.profile, s.start, s.uuid) for s in after.gpus[1].slices] == [
        (i.gi_id, i.profile, i.start, i.uuid) for i in backend.list_instances(1)]
    leases = ray.get(agent.leases.remote())
    assert [(x.gi_id, x.owner, x.stale) for x in leases] == [(gi, "replica-r", False)]
    assert leases == LeaseBook(tmp_path / "node" / "leases.json").leases()
    assert ray.get_actor(agent_name("restart0"), namespace=NAMESPACE) is not None  # found by name again

    # `ray stop` and a fresh cluster on the same state dir: the replica is gone, nothing is stuck
    ray.shutdown()
    _start_cluster()
    agent = start_agent(cfg, detached=False)
    assert [(x.owner, x.stale) for x in ray.get(agent.leases.remote())] == [("replica-r", True)]
    ops = ray.get(agent.apply_layout.remote(1, list(parse_layout("7g@0", "H100-80GB"))))
    assert [(o.op, o.ok) for o in ops] == [("destroy", True), ("destroy", True), ("create", True)]
    assert ray.get(agent.leases.remote()) == []  # went with the destroyed slice
