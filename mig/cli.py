"""`gpu-node mig …`: inspect and change partition layouts (MIG instances or MPS shares).

    gpu-node mig layouts --gpu-type H100-80GB [--all-profiles] [--json]
    gpu-node mig list    [--backend simulated|nvidia-smi] [--partition mig|mps] [--state FILE] [--gpus H100-80GB:2]
    gpu-node mig enable  --gpu N [--disable] --yes [--backend …]
    gpu-node mig apply   --gpu N --layout "3g.40gb@0,3g.40gb@4" [--dry-run] [--backend …] [--partition …]
    gpu-node mig release --stale [--leases FILE]

The simulated backend keeps its GPUs in `--state FILE` (default: $CLOVER_SIM_MIG_STATE, else in
memory for this one command), so `apply` followed by `list` shows the change; MPS shares are
kept in `--state` too (default on a real node: ~/.clover/<host>/mps-state.json). `list` also
shows the slices' leases (mig/leases.py) with their stale flags, and `release --stale` clears
the stale ones: leases live in `--leases FILE` (default: leases.json beside `--state`, else in
~/.clover/<host>/, where `gpu-node setup` keeps them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from configs.cluster import node_state_dir
from configs.loader import load_gpu_catalog
from mig.backend import LEASES_FILE, STATE_FILES, MigBackend, PartitionBackend, make_backend
from mig.errors import MigError
from mig.leases import LeaseBook, LeaseRecord
from mig.types import Placement

ENABLE_WARNING = (
    "WARNING: changing MIG mode resets the GPU: every process using GPU {gpu} must stop first, it\n"
    "needs root on a real node, and the driver may leave the change pending until a GPU reset\n"
    "(`nvidia-smi --gpu-reset -i {gpu}`) or a reboot. All GPU instances are lost."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mig_command", metavar="ACTION", required=True)

    p = sub.add_parser("layouts", help="print every maximal MIG layout of a GPU type")
    p.add_argument("--gpu-type", required=True, help=f"one of: {', '.join(load_gpu_catalog().gpu_types)}")
    p.add_argument("--all-profiles", action="store_true",
                   help="include every profile (1g.20gb, +me variants), not only Clover's 1g/2g/3g/4g/7g")
    p.add_argument("--json", action="store_true", help='print [[{"profile": "3g.40gb", "start": 4}, …], …]')

    def leases_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--leases", default=None,
                       help=f"lease file (default: {LEASES_FILE} beside --state, else in ~/.clover/<host>/)")

    def backend_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--backend", choices=["simulated", "nvidia-smi"], default="simulated",
                       help="where the GPUs come from (default simulated)")
        q.add_argument("--partition", choices=["mig", "mps"], default="mig",
                       help="MIG instances or MPS shares (default mig)")
        q.add_argument("--state", default=os.environ.get("CLOVER_SIM_MIG_STATE"),
                       help="state file of simulated GPUs or of MPS shares (default: $CLOVER_SIM_MIG_STATE, "
                            "else in memory; MPS on nvidia-smi: ~/.clover/<host>/mps-state.json)")
        q.add_argument("--gpus", default=None,
                       help="simulated GPUs for a new state file, e.g. H100-80GB:2 (default H100-80GB:1)")
        leases_arg(q)

    p = sub.add_parser("list", help="list GPUs, their slices and the slices' leases")
    backend_args(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("release", help="clear leases: --stale drops those no live replica renews")
    p.add_argument("--stale", action="store_true", help="drop every stale lease and print what was dropped")
    leases_arg(p)
    p.add_argument("--state", default=os.environ.get("CLOVER_SIM_MIG_STATE"),
                   help="a state file: the lease file is the one beside it (as for list)")

    p = sub.add_parser("enable", help="turn MIG mode on (or off with --disable) for one GPU")
    p.add_argument("--gpu", type=int, required=True)
    p.add_argument("--disable", action="store_true")
    p.add_argument("--yes", action="store_true", help="confirm: processes on the GPU must stop, a reset may follow")
    backend_args(p)

    p = sub.add_parser("apply", help="re-partition one GPU to a layout with the fewest destroy/create ops")
    p.add_argument("--gpu", type=int, required=True)
    p.add_argument("--layout", required=True, help='e.g. "3g.40gb@0,3g.40gb@4" (PROFILE@START; "" = no instances)')
    p.add_argument("--dry-run", action="store_true", help="print the plan without changing anything")
    backend_args(p)


def _leases(args: argparse.Namespace) -> LeaseBook:
    if args.leases:
        return LeaseBook(args.leases)
    return LeaseBook(Path(args.state).with_name(LEASES_FILE) if args.state else node_state_dir() / LEASES_FILE)


def _backend(args: argparse.Namespace) -> PartitionBackend:
    gpus = None
    state = args.state
    if args.backend == "simulated":
        from mig.simulated import parse_gpus_spec

        if args.gpus:
            gpus = parse_gpus_spec(args.gpus)
        if not state:
            print("note: simulated GPUs live in memory for this command only; pass --state FILE to keep them",
                  file=sys.stderr)
    elif args.partition == "mps" and not state:
        state = str(node_state_dir() / STATE_FILES["mps"])
    return make_backend(args.backend, args.partition, state_file=state, gpus=gpus, users=_leases(args).live_owners)


def _layouts(args: argparse.Namespace) -> int:
    from mig.placement import (
        all_profile_names,
        enumerate_layouts,
        format_layout,
        layout_slices,
    )

    gt = load_gpu_catalog().get(args.gpu_type)
    layouts = enumerate_layouts(gt, all_profile_names(gt) if args.all_profiles else None)
    if args.json:
        print(json.dumps([[p.to_json() for p in layout] for layout in layouts]))
        return 0
    for layout in layouts:
        print(format_layout(layout))
    multisets = len({layout_slices(layout) for layout in layouts})
    which = "all profiles" if args.all_profiles else "main profiles"
    print(f"{len(layouts)} maximal layouts of {gt.name} ({which}; {multisets} distinct compute-slice multisets)")
    return 0


def _lease_text(lease: LeaseRecord) -> str:
    return f"{lease.owner} ({'STALE, ' if lease.stale else ''}renewed {time.time() - lease.renewed_at:.0f} s ago)"


def _list(args: argparse.Namespace) -> int:
    backend = _backend(args)
    gpus = backend.list_gpus()
    rows = [(g, backend.list_instances(g.index) if g.enabled else []) for g in gpus]
    held: dict[tuple[int, int], list[LeaseRecord]] = defaultdict(list)  # (gpu, gi_id) -> leases
    for x in _leases(args).leases():
        held[x.gpu, x.gi_id].append(x)
    if args.json:
        print(json.dumps([{"index": g.index, "uuid": g.uuid, "name": g.name, "gpu_type": g.gpu_type,
                           "partitioning": g.partitioning, "enabled": g.enabled, "mig_enabled": g.mig_enabled,
                           "instances": [{"gi_id": i.gi_id, "profile": i.profile, "start": i.start, "size": i.size,
                                          "uuid": i.uuid, "env": backend.slice_env(g, i),
                                          "leases": [asdict(x) for x in held[g.index, i.gi_id]]} for i in insts]}
                          for g, insts in rows], indent=1))
        return 0
    state = {("mig", True): "MIG enabled", ("mig", False): "MIG disabled",
             ("mps", True): "MPS daemon running", ("mps", False): "MPS daemon not running"}
    for g, insts in rows:
        print(f"GPU {g.index}: {g.name} [{g.gpu_type or 'not in catalog'}] {g.uuid} {state[g.partitioning, g.enabled]}")
        for i in insts:
            owners = ", ".join(_lease_text(x) for x in held[g.index, i.gi_id])
            print(f"  GI {i.gi_id:>2}  {i.profile:<11} slots {i.start}-{i.start + i.size - 1}  {i.uuid}"
                  + (f"  leased by {owners}" if owners else ""))
        if g.enabled and not insts:
            print("  (no slices)" if g.partitioning == "mps" else "  (no GPU instances)")
    slices = {(g.index, i.gi_id) for g, insts in rows for i in insts}
    for x in (x for key, xs in sorted(held.items()) if key not in slices for x in xs):
        print(f"lease on GPU {x.gpu} GI {x.gi_id} (no such slice): {_lease_text(x)}")
    return 0


def _release(args: argparse.Namespace) -> int:
    if not args.stale:
        print("gpu-node mig release: add --stale to drop the leases no live replica renews "
              "(live ones are released by their replicas or the controller)", file=sys.stderr)
        return 2
    book = _leases(args)
    gone = book.release_stale()
    for x in gone:
        print(f"released GPU {x.gpu} GI {x.gi_id}: {_lease_text(x)}")
    print(f"released {len(gone)} stale lease{'s' * (len(gone) != 1)} from {book.path or 'memory'}")
    return 0


def _enable(args: argparse.Namespace) -> int:
    backend = _backend(args)
    if not isinstance(backend, MigBackend):
        print("gpu-node mig enable: MPS shares need no mode switch; start the MPS control daemon "
              "(`nvidia-cuda-mps-control -d`, no reset) and check it with `gpu-node setup --system --partition mps`",
              file=sys.stderr)
        return 2
    print(ENABLE_WARNING.format(gpu=args.gpu), file=sys.stderr)
    if not args.yes:
        print("not changed: re-run with --yes to proceed", file=sys.stderr)
        return 2
    print(backend.set_mig_mode(args.gpu, not args.disable))
    return 0


def _apply(args: argparse.Namespace) -> int:
    from mig.placement import format_layout, parse_layout
    from mig.repartition import apply_plan, plan_repartition

    backend = _backend(args)
    info = next((g for g in backend.list_gpus() if g.index == args.gpu), None)
    if info is None:
        raise MigError(f"GPU {args.gpu} not found on this node")
    if not info.gpu_type:
        raise MigError(f"GPU {args.gpu} ({info.name}) is not in configs/gpus.yaml; add its {args.partition.upper()} "
                       "entry first")
    target = parse_layout(args.layout, info.gpu_type)
    if not info.enabled:
        hint = (f"MIG is disabled on GPU {args.gpu}: run `gpu-node mig enable --gpu {args.gpu} --yes` first"
                if info.partitioning == "mig" else
                f"the MPS control daemon is not running for GPU {args.gpu}: start it with `nvidia-cuda-mps-control -d`")
        if not args.dry_run:
            raise MigError(hint)
        print(f"note: {hint}")
    plan = plan_repartition(backend.list_instances(args.gpu) if info.enabled else [], target)
    print(f"GPU {args.gpu} ({info.gpu_type}) -> {format_layout(target) or '(empty)'}")
    print(f"  keep    {format_layout(plan.keep) or '-'}")
    print(f"  destroy {format_layout(_placements(plan.destroy)) or '-'}")
    print(f"  create  {format_layout(plan.create) or '-'}")
    if args.dry_run or plan.is_noop:
        print("dry run: nothing changed" if args.dry_run else "already in the target layout")
        return 0

    def log(op: str, p: Placement, duration_s: float, error: MigError | None) -> None:
        status = "ok" if error is None else f"FAILED: {error}"
        print(f"  {op:<7} {p.profile}@{p.start}  {duration_s * 1000:.0f} ms  {status}")

    apply_plan(backend, args.gpu, plan, on_op=log)
    print(f"done: {plan.op_count} operations")
    return 0


def _placements(items) -> list[Placement]:
    return [x if isinstance(x, Placement) else x.placement for x in items]


def run(args: argparse.Namespace) -> int:
    actions = {"layouts": _layouts, "list": _list, "enable": _enable, "apply": _apply, "release": _release}
    try:
        return actions[args.mig_command](args)
    except (MigError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 1
