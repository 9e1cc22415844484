"""The option of the subcommands that rebuild a trained network from a checkpoint file."""

from __future__ import annotations

import argparse

__all__ = ["add_trust_model_code"]


def add_trust_model_code(parser: argparse.ArgumentParser) -> None:
    """Adds ``--trust-model-code`` (see :func:`ecanet.training.load_trained_model`).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_trust_model_code(parser)
        >>> parser.parse_args(["--trust-model-code"]).trust_model_code
        True
    """
    parser.add_argument(
        "--trust-model-code",
        action="store_true",
        help="build a network the checkpoint names as package.module:function by importing and calling it "
        "(runs that code: only for checkpoints you trust)",
    )
