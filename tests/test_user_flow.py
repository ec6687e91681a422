"""The three commands users type, as separate processes: `gpu-node setup --system`,
`controller --service …`, `loadgen run …`, then run.log.

Real `ray start` (its own port and HOME, so its auth token and state stay in tmp_path), real
HTTP, simulated GPUs. Stopped with `ray stop` at the end.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.accounting.runlog import read_events

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gpu_node_setup_then_controller_then_loadgen(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    gcs, http = free_port(), free_port()
    controller = None
    try:
        setup = subprocess.run(
            [BIN / "gpu-node", "setup", "--system", "--simulate", "--gpus", "2", "--port", str(gcs),
             "--node-name", "flow", "--state-dir", str(tmp_path / "state")],
            env=env, capture_output=True, text=True, timeout=240)
        assert setup.returncode == 0, setup.stderr[-3000:]
        assert "clover-agent-flow" in setup.stdout

        run_dir = tmp_path / "run"
        controller = subprocess.Popen(
            [BIN / "controller", "--service", "efficientnet", "--address", f"127.0.0.1:{gcs}", "--port", str(http),
             "--replan-every", "4", "--time-scale", "7200", "--run-dir", str(run_dir)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 240
        # ready once the first plan is deployed and the loop has ticked (an `interval` event);
        # requests sent before any replica is up are answered 503 + Retry-After, by design
        while not any(e["kind"] == "interval" for e in read_events(run_dir)):
            assert controller.poll() is None, controller.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "controller did not deploy its first plan in 240 s"
            time.sleep(1)

        out = tmp_path / "load.json"
        load = subprocess.run(
            [BIN / "loadgen", "run", "--rate", "10", "--duration", "12", "--service", "efficientnet",
             "--url", f"http://127.0.0.1:{http}", "--no-progress", "--json", str(out)],
            env=env, capture_output=True, text=True, timeout=120)
        assert load.returncode == 0, load.stderr[-2000:]
        result = json.loads(out.read_text())
        assert result["sent"] > 60 and result["ok"] == result["sent"], (result["errors"], result.get("error_examples"))
        time.sleep(5)  # one more re-plan interval accounts the load

        controller.send_signal(signal.SIGINT)
        controller.wait(timeout=120)
        kinds = {e["kind"] for e in read_events(run_dir)}
        assert {"start", "carbon", "plan", "mig_op", "replica", "shares", "interval", "end"} <= kinds
        served = sum(e.get("requests", 0) for e in read_events(run_dir, "interval"))
        assert served == result["ok"]
        assert (run_dir / "run.log").read_text().count("interval") >= 1
    finally:
        if controller is not None and controller.poll() is None:
            controller.kill()
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
