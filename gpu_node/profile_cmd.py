"""`gpu-node profile`: measure model variants here and write a profile the planner accepts.

    gpu-node profile --service efficientnet --device cuda --variants b0,b4,b7 \\
        --batches 1,8 --duration 3 --out effnet_h100.json

To profile one MIG slice, pin the process to it: `CUDA_VISIBLE_DEVICES=MIG-<uuid> gpu-node
profile …` (the slice's profile is recorded in `info.mig_profile`).
"""
from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--out", type=Path, required=True, help="output JSON file")


def run(args: argparse.Namespace) -> int:
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
