"""GPU check of issue 12: two replicas of different variants at once on two MPS shares of one GPU.

The parent process never touches CUDA. It partitions GPU 0 into the shares 4g@0 and 3g@4 with
Clover's MPS backend over nvidia-smi (bookkeeping only: the daemon is checked, nothing on the
GPU changes), takes each share's `slice_env` (GPU UUID, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE,
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT) and starts one replica process per share with exactly that
environment. Each replica builds `models.runner.ModelRunner` on CUDA (fp16, random weights) and
runs back-to-back batches of the network on synthetic inputs, as the profiles were measured.
Three phases, metered by NVML on the whole GPU: replica A alone, replica B alone, both at once.

    python bench/gpu_mps_pair.py --out pair.json [--seconds 5]

Needs the MPS control daemon (`nvidia-cuda-mps-control -d`); changes no GPU setting.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# SERVICE:VARIANT:BATCH:SHARE per replica: different services, on the two shares of a 4g+3g layout
DEFAULT_PAIR = "efficientnet:b4:8:4g@0,albert:xxlarge:8:3g@4"
PHASES = (("A-alone", {"A"}), ("B-alone", {"B"}), ("together", {"A", "B"}))


def _wait_for(path: Path, timeout_s: float, procs: dict[str, subprocess.Popen] | None = None) -> None:
    """Wait for a sync file; the parent also gives up as soon as a replica process failed."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        failed = [n for n, p in (procs or {}).items() if p.poll() not in (None, 0)]
        if failed:
            raise RuntimeError(f"replica {failed} exited with an error (see its output above)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.01)


def replica(name: str, service: str, variant: str, batch: int, sync: Path, device: str) -> None:
    """One replica process: build, warm up, then run during each phase it takes part in."""
    from models.runner import ModelRunner

    runner = ModelRunner(service, variant, device=device)
    inputs = runner.synthetic_inputs(batch)
    runner.warmup((batch,), iters=3)
    (sync / f"ready-{name}").write_text(json.dumps({"pid": os.getpid(), **runner.info}))
    for phase, members in PHASES:
        if name not in members:
            continue
        go = sync / f"go-{phase}"
        _wait_for(go, 300)
        deadline = float(go.read_text())
        lat: list[float] = []
        start = time.time()
        while time.time() < deadline:
            t0 = time.perf_counter()
            runner.forward(inputs)
            runner.synchronize()
            lat.append(time.perf_counter() - t0)
        wall = time.time() - start
        lat.sort()
        (sync / f"done-{phase}-{name}.json").write_text(json.dumps({
            "batches": len(lat), "items_per_s": len(lat) * batch / wall, "wall_s": wall,
            "lat_ms_mean": 1000 * sum(lat) / max(len(lat), 1), "lat_ms_p50": 1000 * lat[len(lat) // 2] if lat else None,
        }))


def mps_clients() -> str:
    """What the MPS control daemon reports: its servers and each server's clients (evidence)."""
    def ask(cmd: str) -> str:
        return subprocess.run(["nvidia-cuda-mps-control"], input=cmd + "\n", capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()

    servers = ask("get_server_list").split()
    return "; ".join(f"server {s}: clients {ask(f'get_client_list {s}').split()}" for s in servers) or "no server"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--device", default="cuda", help="cuda (the check); cpu only to try the script without a GPU")
    p.add_argument("--pair", default=DEFAULT_PAIR, help=f"two SERVICE:VARIANT:BATCH:SHARE (default {DEFAULT_PAIR})")
    p.add_argument("--replica", nargs=5, metavar=("NAME", "SERVICE", "VARIANT", "BATCH", "SYNC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.replica:
        name, service, variant, batch, sync = args.replica
        replica(name, service, variant, int(batch), Path(sync), args.device)
        return 0

    from gpu_node.meters.nvml import NvmlMeter
    from mig.backend import make_backend
    from mig.placement import parse_layout
    from mig.repartition import apply_plan, plan_repartition

    replicas = [(name, *spec.split(":")) for name, spec in zip("AB", args.pair.split(","), strict=True)]
    replicas = [(name, service, variant, int(batch), where) for name, service, variant, batch, where in replicas]

    state = Path(tempfile.mkdtemp(prefix="clover-mps-"))
    backend = make_backend("nvidia-smi", "mps", state_file=state / "mps-state.json")
    gpu = backend.list_gpus()[0]
    layout = parse_layout(",".join(r[4] for r in replicas), gpu.gpu_type)
    apply_plan(backend, gpu.index, plan_repartition(backend.list_instances(gpu.index), layout))
    shares = {f"{i.profile.split('.')[0]}@{i.start}": i for i in backend.list_instances(gpu.index)}
    envs = {name: backend.slice_env(gpu, shares[where]) for name, _s, _v, _b, where in replicas}
    procs = {name: subprocess.Popen([sys.executable, __file__, "--out", str(args.out), "--device", args.device,
                                     "--replica", name, service, variant, str(batch), str(state)],
                                    env={**os.environ, **envs[name]})
             for name, service, variant, batch, _w in replicas}
    result: dict = {"gpu": {"name": gpu.name, "uuid": gpu.uuid, "gpu_type": gpu.gpu_type},
                    "replicas": {}, "phases": {}}
    try:
        for name, service, variant, batch, where in replicas:
            _wait_for(state / f"ready-{name}", 240, procs)
            result["replicas"][name] = {"service": service, "variant": variant, "batch": batch, "share": where,
                                        "env": envs[name], **json.loads((state / f"ready-{name}").read_text())}
        result["mps_clients"] = mps_clients()
        meter = NvmlMeter([gpu.index], prefer="counter")
        meter.begin_window("idle")
        time.sleep(2.0)
        idle = meter.end_window("idle")
        result["idle"] = {"energy_j": idle.total_j, "duration_s": idle.duration_s, "avg_w": idle.total_j / idle.duration_s}
        for phase, members in PHASES:
            meter.begin_window(phase)
            (state / f"go-{phase}").write_text(str(time.time() + args.seconds))
            for name in members:
                _wait_for(state / f"done-{phase}-{name}.json", args.seconds + 120, procs)
            m = meter.end_window(phase)
            result["phases"][phase] = {
                "energy_j": m.total_j, "duration_s": m.duration_s, "avg_w": m.total_j / m.duration_s,
                "estimated": m.estimated,
                "replicas": {n: json.loads((state / f"done-{phase}-{n}.json").read_text()) for n in members}}
        meter.close()
    finally:
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
