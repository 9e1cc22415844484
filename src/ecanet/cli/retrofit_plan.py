"""``ecanet retrofit-plan MODEL_NAME``: where add_eca would put ECA in a torchvision/timm model."""

from __future__ import annotations

import argparse
import sys

from ecanet.retrofit import plan_eca
from ecanet.retrofit.model_names import build_named_model


def _kernel_size(text: str) -> str | int:
    if text == "adaptive":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'adaptive' or an odd int, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``retrofit-plan`` parser to ``subparsers``."""
    parser = subparsers.add_parser(
        "retrofit-plan",
        help="show where add_eca would put ECA in a model (nothing is trained or downloaded)",
        description="Builds the model with random weights and prints the places add_eca would give ECA, "
        "how each was found, and the parameter cost, without changing anything.",
    )
    parser.add_argument(
        "model",
        metavar="MODEL_NAME",
        help="torchvision:NAME, timm:NAME or ecanet:NAME; a bare NAME is looked up in that order",
    )
    parser.add_argument("--kernel-size", type=_kernel_size, default="adaptive", help="'adaptive' or an odd int")
    parser.add_argument("--min-channels", type=int, default=16, help="narrower places get no ECA (default 16)")
    parser.add_argument("--include", action="append", metavar="PATTERN", help="only places matching (repeatable)")
    parser.add_argument("--exclude", action="append", metavar="PATTERN", help="skip places matching (repeatable)")
    parser.add_argument("--replace-se", action="store_true", help="swap squeeze-and-excitation modules for ECA")
    parser.add_argument("--hide-skipped", action="store_true", help="do not list the skipped places")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Prints the plan; returns 0, or 2 for an unknown model or invalid option."""
    try:
        model = build_named_model(args.model)
        report = plan_eca(
            model,
            kernel_size=args.kernel_size,
            min_channels=args.min_channels,
            include=args.include,
            exclude=args.exclude,
            replace_se=args.replace_se,
        )
    except ValueError as error:
        print(f"ecanet retrofit-plan: error: {error}", file=sys.stderr)
        return 2
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model} ({type(model).__name__}, {params:,} parameters)")
    print(report.table(skipped=not args.hide_skipped))
    return 0
