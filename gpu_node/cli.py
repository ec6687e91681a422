"""`gpu-node` command line: node set-up, MIG operations and profiling.

Each sub-command lives in its own module with `add_arguments(parser)` and `run(args) -> int`
(heavy imports inside `run`); the parser/dispatch machinery is shared with `controller`.
"""
from __future__ import annotations

import sys

from configs.cli import dispatch, make_parser

COMMANDS: dict[str, tuple[str, str]] = {
    "setup": ("gpu_node.setup_cmd", "check this node, join the Ray cluster and start the node agent"),
    "mig": ("mig.cli", "inspect and change MIG layouts (layouts, list, enable, apply)"),
    "profile": ("gpu_node.profile_cmd", "measure latency/throughput/energy of model variants"),
}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("gpu-node", "Clover GPU node tools.", COMMANDS)
    return dispatch(parser, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
