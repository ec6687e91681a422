"""The shape every Clover command line shares: one sub-command per module, each module with
`add_arguments(parser)` and `run(args) -> int`, importing heavy libraries inside `run` so that
`--help` stays fast. Ground floor, like configs/cluster.py.

Conventions all three commands (`controller`, `gpu-node`, `loadgen`) get from here, so that no
command can drift from the others:
- `--version` (from the installed package's metadata);
- `--log-level` on every sub-command, and logging set up before the sub-command runs
  (configs/logsetup.py);
- usage and input errors on stderr with exit code 2: argparse's own, a `UsageError` or a
  `ConfigError` raised by a sub-command; `main()` returns the code instead of raising SystemExit,
  so callers (tests, the demo) get a number either way;
- `--service` checked against configs/services.yaml by `service_name` / `check_service_names`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

from configs.cluster import ray_env
from configs.loader import ConfigError, load_services
from configs.logsetup import LOG_LEVELS, setup_logging

DISTRIBUTION = "clover-serve"


class UsageError(ValueError):
    """Arguments or input files that cannot be used; the message says what, where and what to do."""


def package_version() -> str:
    """The installed version of Clover (pyproject.toml's `version`)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: run `pip install -e .` in the repository)"


def check_service_names(names: Iterable[str], flag: str = "--service") -> tuple[str, ...]:
    """The names, if every one is a configured service; else an ArgumentTypeError listing the known ones.

    Shared by every command that takes services (and by `NAME=RATE` lists built on it).
    """
    known = load_services().services
    names = tuple(names)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        what = ", ".join(repr(n) for n in unknown) or "none given"
        raise argparse.ArgumentTypeError(
            f"unknown service {what}; configured services: {', '.join(sorted(known))} "
            f"(add one to configs/services.yaml, or fix {flag})")
    return names


def service_name(text: str) -> str:
    """argparse `type=` for a single `--service NAME`."""
    return check_service_names([text.strip()])[0]


def make_parser(prog: str, description: str, commands: dict[str, tuple[str, str]],
                epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser with `--version` and one sub-command per entry of `commands` (name -> (module, help))."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the installed Clover version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in commands.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
        _add_log_level(p)
        p.set_defaults(_module=module)
    return parser


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    """`--log-level` on every leaf command (`gpu-node mig list` too), where users type options."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in nested:
        for sub in action.choices.values():
            _add_log_level(sub)
    if not nested:
        parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                            help="least severe log messages shown on the console (default: info)")


def dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse `argv`, set up logging and run the chosen sub-command; returns the exit code."""
    ray_env()  # before anything imports ray: Ray reads RAY_AUTH_MODE at import time
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help/--version (0) or a usage error argparse already printed (2)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "command", None):
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: give a command (see `{parser.prog} --help`)", file=sys.stderr)
        return 2
    setup_logging(getattr(args, "log_level", "info"))
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (UsageError, ConfigError) as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
