"""End to end on real Ray Serve and real HTTP, with simulated GPUs: one Ray session for the module.

Two simulated GPU nodes (node0, node1: one H100 each, node agents pinned to their custom
resources) serve yolo. The carbon signal is a recorded-format trace that swings between 60 and
600 gCO2/kWh every hour, stepped one hour per tick, so every tick re-partitions.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

ray = pytest.importorskip("ray")

from controller.accounting.runlog import RunLog, read_events  # noqa: E402
from controller.loop.control_loop import ControlLoop  # noqa: E402
from controller.loop.settings import LoopSettings  # noqa: E402

pytestmark = pytest.mark.slow

TRACE = Path(__file__).parent / "fixtures" / "carbon_swing_48h.csv"
TOKEN = "test-token-not-a-secret"
RATE = 20.0


class SteppedClock:
    """The trace clock: one trace hour per `step()`, so each tick sees the next hour."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def step(self) -> None:
        self.t += 3600.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from controller.carbon.spec import make_source
    from controller.demo import free_port
    from controller.loop.fleet import RayFleet
    from controller.loop.replicas import ServeReplicas
    from controller.loop.state import StateStore
    from controller.serving.runtime import init_ray, shutdown, start_serving
    from gpu_node.agent import AgentConfig, start_agent

    run_dir = tmp_path_factory.mktemp("run")
    init_ray(local_nodes=("node0", "node1"))
    agents = {
        "node0": start_agent(AgentConfig("node0", gpus=1, state_dir=str(run_dir / "n0")), detached=False),
        # node1's MIG operations take 1 s each, so the test can kill its agent mid-way.
        "node1": start_agent(AgentConfig("node1", gpus=1, state_dir=str(run_dir / "n1"), mig_op_delay_s=1.0),
                             detached=False),
    }
    port = free_port()
    bus = start_serving(["yolo"], port=port, api_token=TOKEN)
    clock = SteppedClock()
    carbon = make_source(f"trace:{TRACE}", clock=clock)
    # forecast_hours=0: the swing trace would never pay back a switch; this test is about switching.
    loop = ControlLoop(LoopSettings("yolo", lam=0.5, sla_ms=None, replan_every_s=5.0, rate_rps=RATE,
                                    forecast_hours=0),
                       events=RunLog(run_dir), carbon=carbon, fleet=RayFleet(), runtime=ServeReplicas(), bus=bus,
                       store=StateStore(run_dir / "state" / "desired.json"))
    loop.start()
    yield {"loop": loop, "url": f"http://127.0.0.1:{port}", "agents": agents, "clock": clock, "run_dir": run_dir,
           "bus": bus}
    shutdown()


def _image() -> bytes:
    from loadgen.payloads import load_payloads

    return load_payloads("image", None, seed=3)[0].body


def _load_in_background(url: str, duration_s: float) -> tuple[threading.Thread, dict]:
    from loadgen.arrivals import RateTrace
    from loadgen.generator import run_load_sync
    from loadgen.payloads import load_payloads

    out: dict = {}

    def go() -> None:
        out["result"] = run_load_sync(url, "yolo", RateTrace.constant(RATE), duration_s,
                                      load_payloads("image", None, seed=1), seed=1, timeout_s=30.0)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


def _replicas(loop) -> dict:
    return dict(loop.routes.book.specs)


def test_first_plan_runs_one_replica_per_mig_slice(stack):
    loop = stack["loop"]
    for node, agent in stack["agents"].items():
        info = ray.get(agent.info.remote())
        for g in info.gpus:
            planned = {(s.placement.profile, s.placement.start) for p in loop.plan.gpus if p.gpu_id == g.gpu_id
                       for s in p.slices}
            assert {(s.profile, s.start) for s in g.slices} == planned
    from ray import serve

    for name, spec in _replicas(loop).items():
        stats = serve.get_app_handle(name).stats.remote().result()
        uuid = spec.device_env["CUDA_VISIBLE_DEVICES"]
        assert stats["cuda_visible_devices"] == uuid and uuid.startswith("MIG-")
    status = httpx.get(stack["url"] + "/v1/status").json()
    assert status["plan"]["service"] == "yolo" and status["replicas"]
    assert abs(sum(r["share"] for r in status["replicas"]) - 1.0) < 1e-6
    assert status["desired_version"] >= 1 and status["ingress"]["routing_version"] == status["routing_version"]


def test_repartitions_under_load_lose_no_request(stack):
    loop, clock = stack["loop"], stack["clock"]
    before = loop.stats.reconfigurations
    mig_before = len(read_events(stack["run_dir"], "mig_op"))
    worker, out = _load_in_background(stack["url"], duration_s=40.0)
    changed_plans = 0
    for _ in range(4):
        clock.step()
        loop.tick()
        changed_plans += bool(read_events(stack["run_dir"], "plan")[-1]["changed"])
    worker.join(timeout=120)
    result = out["result"]
    assert changed_plans >= 3
    assert loop.stats.reconfigurations - before >= 3
    # The swings start and stop node1's replicas; the GPU they leave idle keeps its layout, so
    # they cost no MIG operation (a split under load is covered by tests/test_mps_serving.py,
    # tests/test_faults.py and tests/test_rollout.py).
    assert len(read_events(stack["run_dir"], "mig_op")) == mig_before
    assert result.sent > 500 and result.failed == 0, (result.errors, result.error_examples)
    assert result.ok == result.sent
    kinds = {e["kind"] for e in read_events(stack["run_dir"])}
    assert {"start", "carbon", "plan", "mig_op", "replica", "shares", "interval"} <= kinds
    states = {e["state"] for e in read_events(stack["run_dir"], "replica")}
    assert states == {"starting", "up", "draining", "down"}
    intervals = read_events(stack["run_dir"], "interval")
    assert sum(e["requests"] for e in intervals) > 0 and all(e["failed"] == 0 for e in intervals)
    assert all(e["energy_j"] > 0 and e["carbon_g"] > 0 for e in intervals)
    text = (stack["run_dir"] / "run.log").read_text()
    assert "mig_op" in text and "create" in text


@pytest.mark.parametrize("body,status,needle", [
    (b"not an image at all", 400, "JPEG/PNG"),
    (b'{"question": "q", "context": "c"}', 400, "JPEG/PNG"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, 400, "image"),
    (b"", 400, "empty"),
])
def test_malformed_payloads_get_4xx_and_replicas_stay_healthy(stack, body, status, needle):
    r = httpx.post(stack["url"] + "/v1/infer", content=body, timeout=30)
    assert r.status_code == status and needle in r.json()["error"]
    ok = httpx.post(stack["url"] + "/v1/infer", content=_image(), timeout=30)
    assert ok.status_code == 200 and ok.json()["variant"]
    from ray import serve

    apps = serve.status().applications
    assert all(apps[n].status == "RUNNING" for n in _replicas(stack["loop"]))


def test_oversized_body_gets_413(stack):
    r = httpx.post(stack["url"] + "/v1/infer", content=b"x" * (10 * 1024 * 1024 + 1), timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # chunked transfer: no Content-Length, so the limit applies while streaming
        for _ in range(11):
            yield b"x" * (1024 * 1024)

    r = httpx.post(stack["url"] + "/v1/infer", content=chunks(), timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_state_changing_endpoints_need_the_bearer_token(stack):
    url = stack["url"] + "/v1/config"
    loop = stack["loop"]
    assert httpx.post(url, json={"lambda": 0.3}).status_code == 401
    assert httpx.post(url, json={"lambda": 0.3}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url, json={"lambda": 7}, headers=auth).status_code == 422
    assert httpx.post(url, json={"lambda": 0.3, "service": "nope"}, headers=auth).status_code == 404
    t0 = time.monotonic()
    assert httpx.post(url, json={"lambda": 0.3}, headers=auth).status_code == 200
    assert httpx.get(stack["url"] + "/v1/status").json()["lambda"] == 0.3  # shown at once, before the loop acts
    assert time.monotonic() - t0 < 1.0
    loop.handle_commands()
    assert loop.settings.lam == 0.3
    # an SLA change re-bounds the router's queues as soon as the loop re-publishes the routes
    sla = loop.settings.sla

    def bounds() -> dict:
        table = stack["bus"].table()
        return {e.name: e.max_queue for e in table.entries}

    before = bounds()
    assert httpx.post(url, json={"sla_ms": sla * 20}, headers=auth).status_code == 200
    loop.handle_commands()
    assert loop.pending_replan == "config"  # the loop re-plans at its next step (within a second when running)
    loop.routes.publish(loop.workload, loop.demand.rates, loop.carbon_now)
    wider = bounds()
    assert wider.keys() == before.keys() and all(wider[n] > before[n] for n in before)
    assert httpx.post(url, json={"sla_ms": sla}, headers=auth).status_code == 200
    loop.handle_commands()
    loop.routes.publish(loop.workload, loop.demand.rates, loop.carbon_now)
    assert bounds() == before
    assert TOKEN not in (stack["run_dir"] / "run.log").read_text()
    loop.publish_status()
    metrics = httpx.get(stack["url"] + "/metrics").text
    # the loop's accounting (request and latency series come from the merged ServingCounters
    # once the ingress renders /metrics with controller.accounting.metrics.render_metrics)
    assert 'clover_baseline_carbon_grams_total{service="yolo"}' in metrics
    assert 'clover_requests_total{replica="replica-node' in metrics  # live, from the ingress counters
    assert 'clover_slice_duration_seconds_bucket{' in metrics
    assert 'clover_energy_joules_total{gpu="' in metrics and 'service="yolo",slice=' in metrics


def _plan_changing_node1(loop) -> dict:
    """The running plan with node1's GPU re-partitioned (7g <-> 4g+3g), the base variant on it."""
    from dataclasses import replace

    from controller.planning.plan import GpuPlan, SliceAssignment
    from mig.types import Placement

    gpus = []
    for g in loop.plan.gpus:
        if g.gpu_id.startswith("node1/"):
            whole = [s for s in g.slices if s.placement.profile.startswith("7g")]
            layout = ([Placement("4g.40gb", 0), Placement("3g.40gb", 4)] if whole else [Placement("7g.80gb", 0)])
            g = GpuPlan(g.gpu_id, g.gpu_type, tuple(SliceAssignment(p, "yolo11x", 8, 0.5) for p in layout))
        gpus.append(g)
    return replace(loop.plan, gpus=tuple(gpus)).to_json()


def _plan_with_bad_node0_layout(loop) -> "object":
    """node0 asked for 7g + 1g: the MIG create of the 1g fails (a 7g takes every slot)."""
    from dataclasses import replace

    from controller.planning.plan import GpuPlan, SliceAssignment
    from mig.types import Placement

    bad = (SliceAssignment(Placement("7g.80gb", 0), "yolo11x", 8, 0.5),
           SliceAssignment(Placement("1g.10gb", 6), "yolo11n", 1, 0.1))
    return replace(loop.plan, gpus=tuple(GpuPlan(g.gpu_id, g.gpu_type, bad) if g.gpu_id.startswith("node0/") else g
                                         for g in loop.plan.gpus))


def test_forced_plan_needs_token_and_is_validated(stack):
    url = stack["url"] + "/v1/plan"
    plan = _plan_changing_node1(stack["loop"])
    assert httpx.post(url, json=plan).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url, json={"service": "albert"}, headers=auth).status_code == 422
    assert httpx.post(url, json={**plan, "service": "albert"}, headers=auth).status_code == 422
    r = httpx.post(url, json=_plan_with_bad_node0_layout(stack["loop"]).to_json(), headers=auth)
    assert r.status_code == 422 and "invalid MIG layout" in r.json()["error"]
    bad_variant = {**plan, "gpus": [{**g, "slices": [{**sl, "variant": "no-such-model"} for sl in g["slices"]]}
                                    for g in plan["gpus"]]}
    r = httpx.post(url, json=bad_variant, headers=auth)
    assert r.status_code == 422 and "unknown variant 'no-such-model'" in r.json()["error"]


def test_failed_step_rolls_back_to_a_serving_state(stack):
    loop, run_dir = stack["loop"], stack["run_dir"]
    before = next(g for g in loop.plan.gpus if g.gpu_id == "node0/gpu0")
    seen = len(read_events(run_dir))
    worker, out = _load_in_background(stack["url"], duration_s=12.0)
    time.sleep(1.0)
    loop._set_desired(_plan_with_bad_node0_layout(loop))  # as if the planner produced an impossible layout
    loop.reconcile()
    worker.join(timeout=120)
    new = read_events(run_dir)[seen:]
    assert any(e["kind"] == "mig_op" and not e["ok"] for e in new)
    assert any(e["kind"] == "error" and "rolling back" in e["message"] for e in new)
    now = next(g for g in loop.plan.gpus if g.gpu_id == "node0/gpu0")
    assert now.layout == before.layout  # the desired state follows the rollback: no retry loop
    info = ray.get(stack["agents"]["node0"].info.remote())
    assert [(s.profile, s.start) for s in info.gpus[0].slices] == [(p.profile, p.start) for p in before.layout]
    assert any(s.gpu_id == "node0/gpu0" for s in _replicas(loop).values())
    assert out["result"].failed == 0, out["result"].errors


def test_agent_killed_mid_reconfiguration_is_readopted_and_the_step_finishes(stack):
    """The agent's process dies inside node1's re-partition; Ray restarts it, it rebuilds its view
    from the MIG state, and the next reconcile finishes the step. No request fails."""
    loop, run_dir = stack["loop"], stack["run_dir"]
    seen = len(read_events(run_dir))
    victim = stack["agents"]["node1"]
    killed = threading.Event()

    def kill_when_node1_changes() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(e["kind"] == "replica" and e.get("state") == "down" and e["gpu"] == "node1/gpu0"
                   for e in read_events(run_dir)[seen:]):
                time.sleep(0.5)  # inside node1's MIG operations (1 s each there)
                ray.kill(victim, no_restart=False)  # the process dies; Ray restarts the actor
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_node1_changes, daemon=True)
    killer.start()
    worker, out = _load_in_background(stack["url"], duration_s=25.0)
    time.sleep(2.0)
    r = httpx.post(stack["url"] + "/v1/plan", json=_plan_changing_node1(loop),
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    loop.handle_commands()
    loop.step_once()  # applies the forced plan: node1 drains, its agent dies mid-way
    killer.join(timeout=60)
    assert killed.is_set()
    for _ in range(10):  # converge within a few ticks, no manual step
        report = loop.reconcile()
        if report.converged and "node1/gpu0" in report.fleet.gpus:
            break
        time.sleep(1.0)
    worker.join(timeout=120)
    assert report.converged and "node1/gpu0" in report.fleet.gpus
    want = next(g for g in loop.plan.gpus if g.gpu_id == "node1/gpu0")
    info = ray.get(victim.info.remote())
    assert [(s.profile, s.start) for s in info.gpus[0].slices] == [(p.profile, p.start) for p in want.layout]
    assert {(s.profile, s.start) for s in _replicas(loop).values() if s.gpu_id == "node1/gpu0"} == \
        {(s.placement.profile, s.placement.start) for s in want.slices if s.variant}
    result = out["result"]
    assert result.failed == 0, (result.errors, result.error_examples)
    assert httpx.post(stack["url"] + "/v1/infer", content=_image(), timeout=30).status_code == 200
