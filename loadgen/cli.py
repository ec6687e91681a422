"""`loadgen` command line (see loadgen/run_cmd.py for `loadgen run`)."""
from __future__ import annotations

import sys

from configs.cli import dispatch, make_parser

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("loadgen.run_cmd", "send Poisson traffic and report latency/errors"),
}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("loadgen", "Open-loop load generator for a Clover service.", COMMANDS)
    return dispatch(parser, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
