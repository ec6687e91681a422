"""`loadgen` command line (see loadgen/run_cmd.py for `loadgen run`)."""
from __future__ import annotations

import argparse
import sys

from loadgen import run_cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen", description="Open-loop load generator for a Clover service.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("run", help="send Poisson traffic and report latency/errors")
    run_cmd.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help()
        return 2
    return int(run_cmd.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
