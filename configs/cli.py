"""The shape every Clover command line shares: one sub-command per module, each module with
`add_arguments(parser)` and `run(args) -> int`, importing heavy libraries inside `run` so that
`--help` stays fast. Ground floor, like configs/cluster.py.
"""
from __future__ import annotations

import argparse
import importlib

from configs.cluster import ray_env


def make_parser(prog: str, description: str, commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    """A parser with one sub-command per entry of `commands` (name -> (module, help)).

    Shared by the `controller`, `gpu-node` and `loadgen` commands.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in commands.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse `argv` and run the chosen sub-command module's `run(args)`."""
    ray_env()  # before anything imports ray: Ray reads RAY_AUTH_MODE at import time
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)
