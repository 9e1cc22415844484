"""Entry point of the ``ecanet`` command: builds the parser from the subcommand modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecanet import __version__
from ecanet.cli import bench, compare, explain, export, info, retrofit_plan, showcase, train
from ecanet.dependencies import MissingDependency

# Each subcommand module offers ``register(subparsers)``, which adds its parser and sets
# ``handler`` (a function of the parsed arguments returning an exit code).
SUBCOMMANDS = (showcase, retrofit_plan, info, train, compare, bench, export, explain)


def build_parser() -> argparse.ArgumentParser:
    """The full ``ecanet`` argument parser."""
    parser = argparse.ArgumentParser(prog="ecanet", description="Efficient Channel Attention for PyTorch.")
    parser.add_argument("--version", action="version", version=f"ecanet {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``ecanet`` with ``argv`` (default: the process arguments) and returns the exit code.

    A subcommand that needs a package ``pip install ecanet`` leaves out (an extra's) stops before
    its work with a line naming the package and the install that provides it, exit code 2.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except MissingDependency as error:
        print(f"ecanet {args.command}: error: {error}", file=sys.stderr)
        return 2
