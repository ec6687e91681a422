"""`controller` command line.

`controller --service yolo …` runs the controller (same as `controller run …`); the other
sub-commands are listed by `controller --help`. Each sub-command lives in its own module
with `add_arguments(parser)` and `run(args) -> int`; those modules import heavy libraries
inside `run` so that `--help` stays fast.
"""
from __future__ import annotations

import argparse
import sys

from configs.cli import dispatch, make_parser

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("controller.loop.run_cmd", "run the controller: deploy the Serve app and the carbon-aware control loop"),
    "stop": ("controller.loop.stop_cmd", "stop a controller started with `controller run --detach`"),
    "demo": ("controller.demo", "controller + simulated 2-GPU node + load generator on this machine"),
    "simulate": ("controller.planning.simulate_cmd", "replay a carbon trace through policies on the performance model"),
    "carbon": ("controller.carbon.cli", "print the current carbon intensity from a source"),
    "report": ("controller.accounting.report", "render plots and an HTML page from a run directory"),
}


EPILOG = """\
`controller --service NAME ...` without a command is short for `controller run --service NAME ...`.
Each command has its own help: `controller run --help`, `controller demo --help`, ...
"""


def build_parser() -> argparse.ArgumentParser:
    return make_parser(
        "controller", "Clover controller: carbon-aware MIG partitioning and model-variant selection.", COMMANDS,
        epilog=EPILOG,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `controller --service yolo` is the documented way to start the controller.
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run", *argv]
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
