"""`gpu-node` command line: node set-up, MIG operations and profiling.

Each sub-command lives in its own module with `add_arguments(parser)` and `run(args) -> int`
(heavy imports inside `run`).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "setup": ("gpu_node.setup_cmd", "check this node, join the Ray cluster and start the node agent"),
    "mig": ("mig.cli", "inspect and change MIG layouts (layouts, list, enable, apply)"),
    "profile": ("gpu_node.profile_cmd", "measure latency/throughput/energy of model variants"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-node", description="Clover GPU node tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
