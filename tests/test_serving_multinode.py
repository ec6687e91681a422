"""Multi-node: a controller (head) node and two simulated GPU nodes, each with its own agent.

`ray.cluster_utils.Cluster` starts three raylets on this machine; each GPU node advertises its
`clover_node_<name>` resource, its agent is pinned to it with node affinity (what
`gpu-node setup --system` does on a real node), and the controller must place every replica on
the node that owns its MIG slice.
"""
from __future__ import annotations

import httpx
import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray import serve
    from ray.cluster_utils import Cluster

    from configs.cluster import agent_name, node_resource, ray_env
    from controller.demo import free_port
    from controller.serving.runtime import start_ingress
    from gpu_node.agent import AgentConfig
    from gpu_node.setup_cmd import bring_up_agent

    ray_env()
    tmp = tmp_path_factory.mktemp("multinode")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = {name: c.add_node(num_cpus=1, resources={node_resource(name): 1000}) for name in ("gpuA", "gpuB")}
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="clover", log_to_driver=False)
    infos = {name: bring_up_agent(AgentConfig(name, gpus=1, state_dir=str(tmp / name)), ray_node_id=n.node_id)
             for name, n in nodes.items()}
    port = free_port()
    ingress = start_ingress("albert", port=port)
    yield {"nodes": nodes, "infos": infos, "ingress": ingress, "url": f"http://127.0.0.1:{port}",
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
    from controller.loop.control_loop import ControlLoop, LoopSettings
    from gpu_node.agent import find_agents
    from loadgen.payloads import load_payloads

    agents = find_agents()
    assert set(agents) == {"gpuA", "gpuB"}
    loop = ControlLoop(LoopSettings("albert", lam=0.1, sla_ms=None, replan_every_s=60, rate_rps=40.0),
                       runlog=RunLog(cluster["run_dir"]), carbon=make_source("constant:250"), agents=agents,
                       ingress=cluster["ingress"])
    loop.start()
    assert {r.spec.node for r in loop.replicas.values()} == {"gpuA", "gpuB"}
    for name, r in loop.replicas.items():
        stats = serve.get_app_handle(name).stats.remote().result()
        assert stats["ray_node_id"] == cluster["nodes"][r.spec.node].node_id
    payloads = load_payloads("qa-json", None, seed=2)
    variants = set()
    with httpx.Client(timeout=30) as client:
        for p in payloads * 3:
            r = client.post(cluster["url"] + "/v1/infer", content=p.body)
            assert r.status_code == 200, r.text
            variants.add(r.json()["variant"])
    assert variants <= {r.spec.variant for r in loop.replicas.values()} and variants
    bad = httpx.post(cluster["url"] + "/v1/infer", content=b'{"question": 3}', timeout=30)
    assert bad.status_code == 400 and "question" in bad.json()["error"]
    loop.finish()
    assert loop.stats.intervals[-1]["requests"] == len(payloads) * 3
