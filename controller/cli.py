"""`controller` command line.

`controller --service yolo …` runs the controller (same as `controller run …`); the other
sub-commands are listed by `controller --help`. Each sub-command lives in its own module
with `add_arguments(parser)` and `run(args) -> int`; those modules import heavy libraries
inside `run` so that `--help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("controller.run_cmd", "run the controller: deploy the Serve app and the carbon-aware control loop"),
    "demo": ("controller.demo", "controller + simulated 2-GPU node + load generator on this machine"),
    "simulate": ("controller.simulate_cmd", "replay a carbon trace through policies on the performance model"),
    "carbon": ("controller.carbon.cli", "print the current carbon intensity from a source"),
    "report": ("controller.report", "render plots and an HTML page from a run directory"),
}


def make_parser(prog: str, description: str, commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    """A parser with one sub-command per entry of `commands` (name -> (module, help)).

    Shared by the `controller` and `gpu-node` commands.
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
    from controller.serve_runtime import ray_env

    ray_env()  # before anything imports ray: Ray reads RAY_AUTH_MODE at import time
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    return make_parser(
        "controller", "Clover controller: carbon-aware MIG partitioning and model-variant selection.", COMMANDS
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `controller --service yolo` is the documented way to start the controller.
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
