"""Multi-node: a controller (head) node and two simulated GPU nodes, each with its own agent.

`ray.cluster_utils.Cluster` starts three raylets on this machine; each GPU node advertises its
`clover_node_<name>` resource and its pool of `clover_mig_slice` units, its agent is pinned to it
with node affinity (what `gpu-node setup --system` does on a real node), and the controller must
place every replica on the node that owns its MIG slice, while the agents hold the units Clover uses.
"""
from __future__ import annotations

import time

import httpx
import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray import serve
    from ray.cluster_utils import Cluster

    from configs.cluster import agent_name, node_resources, ray_env
    from controller.demo import free_port
    from controller.serving.runtime import start_serving
    from gpu_node.agent import AgentConfig
    from gpu_node.setup_cmd import bring_up_agent

    ray_env()
    tmp = tmp_path_factory.mktemp("multinode")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = {name: c.add_node(num_cpus=1, resources=node_resources(name, 7)) for name in ("gpuA", "gpuB")}
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="clover", log_to_driver=False)
    infos = {name: bring_up_agent(AgentConfig(name, gpus=1, state_dir=str(tmp / name)), ray_node_id=n.node_id)
             for name, n in nodes.items()}
    port = free_port()
    bus = start_serving(["albert"], port=port)
    yield {"nodes": nodes, "infos": infos, "bus": bus, "url": f"http://127.0.0.1:{port}",
           "head_id": c.head_node.node_id, "run_dir": tmp / "run"}
    for name in nodes:  # detached: they outlive the driver unless killed
        ray.kill(ray.get_actor(agent_name(name), namespace="clover"))
    serve.shutdown()
    ray.shutdown()
    c.shutdown()


def test_agents_run_on_their_own_nodes(cluster):
    for name, n in cluster["nodes"].items():
        assert cluster["infos"][name].ray_node_id == n.node_id != cluster["head_id"]


def test_controller_places_each_replica_on_its_slice_node_and_serves(cluster):
    from ray import serve

    from controller.accounting.runlog import RunLog
    from controller.carbon.spec import make_source
    from controller.loop.control_loop import ControlLoop
    from controller.loop.fleet import RayFleet, find_agents
    from controller.loop.replicas import ServeReplicas
    from controller.loop.settings import LoopSettings
    from controller.loop.state import StateStore
    from controller.loop.status import status_doc
    from loadgen.payloads import load_payloads

    assert set(find_agents()) == {"gpuA", "gpuB"}
    run_dir = cluster["run_dir"]
    loop = ControlLoop(LoopSettings("albert", lam=0.1, sla_ms=None, replan_every_s=60, rate_rps=40.0),
                       events=RunLog(run_dir), carbon=make_source("constant:250"), fleet=RayFleet(),
                       runtime=ServeReplicas(), bus=cluster["bus"], store=StateStore(run_dir / "desired.json"))
    loop.start()
    replicas = loop.routes.book.specs
    assert {s.node for s in replicas.values()} == {"gpuA", "gpuB"}
    for name, spec in replicas.items():
        stats = serve.get_app_handle(name).stats.remote().result()
        assert stats["ray_node_id"] == cluster["nodes"][spec.node].node_id
    payloads = load_payloads("qa-json", None, seed=2)
    variants = set()
    with httpx.Client(timeout=30) as client:
        for p in payloads * 3:
            r = client.post(cluster["url"] + "/v1/infer", content=p.body)
            assert r.status_code == 200, r.text
            variants.add(r.json()["variant"])
    assert variants <= {s.variant for s in replicas.values()} and variants
    bad = httpx.post(cluster["url"] + "/v1/infer", content=b'{"question": 3}', timeout=30)
    assert bad.status_code == 400 and "question" in bad.json()["error"]
    capacity = status_doc(loop)["free_capacity"]  # the pool advertised: replicas were placed all the same
    assert set(capacity) == {"gpuA", "gpuB"} and all(c["advertised"] == 7 for c in capacity.values())
    assert all(c["wanted"] + c["free_units"] == 7 for c in capacity.values())
    time.sleep(1.0)  # the ingress replicas report their counters every 0.25 s
    loop.finish()
    assert loop.accounting.intervals[-1]["requests"] == len(payloads) * 3
