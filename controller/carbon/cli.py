"""Not implemented yet (placeholder until its issue lands)."""
import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("not implemented yet")
    return 1
