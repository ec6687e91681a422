"""The control loop with a GPU whose change cannot be made (no spare capacity, no bridge): after
the bounded wait it keeps that GPU's layout in the desired state and re-plans around it, so the
plan is reachable and converged instead of waiting for ever, also after a restart. Ray-free (tests/loop_fakes.py)."""
from __future__ import annotations

from controller.carbon.spec import make_source
from controller.loop.control_loop import ControlLoop
from controller.loop.rollout import StepOutcome
from controller.loop.settings import LoopSettings
from controller.loop.state import StateStore
from controller.serving.control_bus import ConfigCommand
from tests.loop_fakes import P7, Clock, Events, FakeBus, FakeFleet, FakeRuntime, Journal


def test_a_gpu_that_cannot_change_is_held_and_the_plan_follows(tmp_path):
    journal, events = Journal(), Events()
    fleet, runtime, bus = FakeFleet(tmp_path, journal, {"n0": 1}), FakeRuntime(journal), FakeBus(journal)
    # ALBERT at 20 req/s on one H100: one 7g slice at λ 0.5, a 4g + 3g split at λ 0.1
    settings = LoopSettings("albert", 0.5, None, 300.0, 20.0, drain_timeout_s=1.0, stuck_after_s=60.0,
                            forecast_hours=0)
    loop = ControlLoop(settings, events=events, carbon=make_source("constant:300"), fleet=fleet, runtime=runtime,
                       bus=bus, store=StateStore(tmp_path / "desired.json"))
    loop.reconciler.clock = clock = Clock()
    loop.start()
    assert loop.plan.gpus[0].layout == (P7,)
    loop.handle([ConfigCommand(lam=0.1)])
    loop.step_once()  # re-plans for λ 0.1: the only GPU should be split, which drops all capacity meanwhile
    assert len(loop.plan.gpus[0].layout) == 2 and not loop.held_gpus  # waiting (and no bridge: one GPU)
    clock.now += 60.0
    report = loop.reconcile()  # the wait is over
    assert report.held == {"n0/gpu0": ("albert",)} and loop.held_gpus == ["n0/gpu0"]
    assert loop.plan.gpus[0].layout == (P7,)  # the desired state follows what runs
    assert loop.pending_replan == "held"
    loop.step_once()  # re-plans with the GPU held: the layout stays, so the plan is reachable
    last = events.of("plan")[-1][2]
    assert last["reason"] == "held" and loop.plan.gpus[0].layout == (P7,)
    assert loop.reconcile().outcomes in ({}, {"n0/gpu0": StepOutcome.DONE})  # at most a variant swap
    assert loop.reconcile().outcomes == {}
    assert [r.spec.profile for r in runtime.apps.values()] == ["7g.80gb"]
    assert any("n0/gpu0" in m and "albert" in m for _, m, _ in events.of("error"))
    loop.publish_status()
    assert bus.status["held_gpus"] == ["n0/gpu0"]

    # the controller restarts: the hold is in the desired state, so the new loop neither tries the
    # split again nor waits it out; the count of intervals left goes on from where it was
    left = loop.desired.held["n0/gpu0"]
    again = ControlLoop(settings, events=events, carbon=make_source("constant:300"), fleet=fleet, runtime=runtime,
                        bus=bus, store=StateStore(tmp_path / "desired.json"))
    again.reconciler.clock = clock
    again.start()
    assert again.held_gpus == ["n0/gpu0"] and again.plan.gpus[0].layout == (P7,)
    again.handle([ConfigCommand(lam=0.1)])
    again.step_once()
    assert again.plan.gpus[0].layout == (P7,) and again.reconcile().outcomes == {}
    assert again.desired.held == {"n0/gpu0": left}
