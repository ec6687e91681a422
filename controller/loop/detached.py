"""`controller run --detach`: the control loop as a detached, restartable Ray actor.

It outlives the shell that launched it, and Ray restarts it if its process dies; since the loop
starts in the actor's constructor and resumes from the desired-state file, a restarted actor
adopts what runs, like a restarted `controller` command. It is pinned to the node the command
ran on, so RUN_DIR (run.log, emissions.csv, the desired state) is the same directory.
`controller stop` asks it to finish its last interval and then removes it.
"""
from __future__ import annotations

import threading

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from configs.cluster import NAMESPACE
from controller.loop.assemble import LoopSpec, build_loop
from controller.loop.control_loop import ControlLoop

CONTROLLER_NAME = "clover-controller"


class ControllerActor:
    def __init__(self, spec: LoopSpec) -> None:
        self.spec = spec
        self.loop: ControlLoop = build_loop(spec)
        self.loop.start()
        self._thread = threading.Thread(target=self.loop.run, name="control-loop", daemon=True)
        self._thread.start()

    def describe(self) -> dict[str, object]:
        return {"service": self.spec.settings.service, "run_dir": self.spec.run_dir, "gpus": sorted(self.loop.gpus),
                "sla_ms": self.loop.settings.sla_ms, "running": self._thread.is_alive()}

    def stop(self) -> dict[str, object]:
        """Finish: stop the loop, account for the last partial interval, write the end event."""
        self.loop.stop()
        self._thread.join(timeout=120)
        self.loop.finish()
        t = self.loop.accountant.totals()
        summary = {"reconfigurations": self.loop.stats.reconfigurations, "carbon_g": t.carbon_g,
                   "baseline_carbon_g": t.baseline_carbon_g, "requests": t.requests, "failed": t.failed}
        self.loop.events.event("end", "controller stopped (controller stop)", summary=summary)
        return summary


def start_detached(spec: LoopSpec) -> ActorHandle:
    """Start the detached controller (or find the one that runs) and wait until it serves."""
    handle = ray.remote(ControllerActor).options(
        name=CONTROLLER_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        num_cpus=0, max_concurrency=4,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
    ).remote(spec)
    ray.get(handle.describe.remote(), timeout=600)
    return handle


def find_detached() -> ActorHandle | None:
    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
