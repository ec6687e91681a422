"""`gpu-node profile`: measure model variants here and write a profile the planner accepts.

    gpu-node profile --service efficientnet --device cuda --variants b0,b4,b7 \\
        --batches 1,8 --duration 3 --out effnet_h100.json

To profile one MIG slice, pin the process to it: `CUDA_VISIBLE_DEVICES=MIG-<uuid> gpu-node
profile …` (the slice's profile is recorded in `info.mig_profile`).

To profile MPS shares (a GPU without MIG, the MPS control daemon running):

    gpu-node profile --service efficientnet --device cuda --mps-percent 14,29,43,57,100 \
        --batches 1,8 --out configs/profiles/h200.json

runs one profiling process per share with `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` set (each process
alone on the GPU, one after the other) and writes `h200_mps-<pct>pct.json` per share, the shape
of the bundled H100 files, so `PerformanceModel.from_profiles` fits them directly.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def _csv(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, help="service from configs/services.yaml (yolo, efficientnet, albert)")
    parser.add_argument("--variants", type=_csv(str), default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--batches", type=_csv(int), default=[1, 4, 8], help="comma-separated batch sizes (default 1,4,8)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds timed per variant and batch (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each timed window (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtypes", type=_csv(str), default=None,
                        help="fp16 and/or fp32 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="directory with real weights (docs/models.md); default: random weights")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all CPUs available)")
    parser.add_argument("--mps-percent", type=_csv(int), default=None,
                        help="profile MPS shares: one process per CUDA_MPS_ACTIVE_THREAD_PERCENTAGE value "
                             "(e.g. 14,29,43,57,100; the MPS control daemon must run); writes <out>_mps-<pct>pct.json")
    parser.add_argument("--out", type=Path, required=True, help="output JSON file (with --mps-percent: the prefix)")


def share_path(out: Path, percent: int) -> Path:
    """Where the profile of one MPS share goes: `h200.json` -> `h200_mps-43pct.json` (bundled naming)."""
    stem = out.stem if out.suffix == ".json" else out.name
    return out.with_name(f"{stem}_mps-{percent}pct.json")


def share_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """The `gpu-node profile` arguments of one share's process (everything but --mps-percent)."""
    argv = ["profile", "--service", args.service, "--batches", ",".join(map(str, args.batches)),
            "--duration", str(args.duration), "--warmup", str(args.warmup), "--device", args.device, "--out", str(out)]
    for flag, value in (("--variants", args.variants), ("--dtypes", args.dtypes)):
        if value:
            argv += [flag, ",".join(value)]
    for flag, value in (("--weights-dir", args.weights_dir), ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_shares(args: argparse.Namespace) -> int:
    """One profiling process per MPS share, one after the other, each alone on the GPU."""
    from mig.mps import MpsControl

    bad = [p for p in args.mps_percent if not 1 <= p <= 100]
    if bad:
        print(f"gpu-node profile: --mps-percent values must be 1-100, got {bad}", file=sys.stderr)
        return 2
    status = MpsControl().status()
    if not status.running:
        print(f"gpu-node profile --mps-percent: {status.detail}", file=sys.stderr)
        return 2
    failed = []
    for percent in args.mps_percent:
        out = share_path(args.out, percent)
        print(f"MPS share {percent} %: profiling in its own process -> {out}", file=sys.stderr)
        env = {**os.environ, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(percent)}
        done = subprocess.run([sys.executable, "-m", "gpu_node.cli", *share_argv(args, out)], env=env, check=False)
        if done.returncode != 0:
            failed.append(percent)
    if failed:
        print(f"gpu-node profile: shares {failed} failed (see above)", file=sys.stderr)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if args.mps_percent:
        return run_shares(args)
    return profile_here(args)


def profile_here(args: argparse.Namespace) -> int:
    """Profile in this process, on whatever this process may use of the device."""
    import logging

    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from gpu_node.profiler import (
        ProfileRequest,
        profile,
        request_dtypes,
        selected_specs,
    )

    console = Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)])
    if any(b < 1 for b in args.batches) or args.duration <= 0:
        console.print("[red]--batches must be ≥ 1 and --duration > 0[/red]")
        return 2
    bad_dtypes = set(args.dtypes or ()) - {"fp16", "fp32"}
    if bad_dtypes:
        console.print(f"[red]--dtypes: unknown {sorted(bad_dtypes)}; use fp16 and/or fp32[/red]")
        return 2
    req = ProfileRequest(
        service=args.service, variants=args.variants, batches=tuple(args.batches), duration_s=args.duration,
        warmup_s=args.warmup, device=args.device, dtypes=tuple(args.dtypes or ()),
        weights_dir=args.weights_dir, threads=args.threads,
    )
    try:
        total = len(selected_specs(req)) * len(request_dtypes(req)) * len(req.batches)
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/red]")
        return 2
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"profiling {args.service} on {args.device}", total=total)

        def on_step(description: str, steps: int) -> None:
            progress.update(task, advance=steps, description=description)

        try:
            result = profile(req, on_step)
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            console.print(f"[red]profile failed: {exc}[/red]")
            return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    failed = [k for k, v in result["variants"].items() if "error" in v]
    console.print(f"wrote {args.out} ({len(result['variants'])} variants"
                  + (f", failed: {', '.join(failed)}" if failed else "") + ")")
    return 1 if failed else 0
