"""``ecanet info NAME [NAME ...]``: parameters and FLOPs of registered models, beside the paper's Table 3."""

from __future__ import annotations

import argparse
import sys

from ecanet.models.profile import PAPER_TABLE3, profile_registered_model
from ecanet.models.registry import list_models

_COLUMNS = (
    ("model", 18),
    ("params (M)", 11),
    ("params (2^20)", 14),
    ("attention params", 17),
    ("GMACs", 8),
    ("MACs (2^30)", 12),
    ("GFLOPs", 8),
    ("paper params (2^20)", 20),
    ("paper FLOPs (2^30)", 19),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="parameters, attention parameters and FLOPs of registered models",
        description="Profiles registered models (built on the meta device: instant, nothing allocated).",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="model names or fnmatch patterns, e.g. '*resnet50'")
    parser.add_argument("--image-size", type=int, default=224, help="input height and width (default: 224)")
    parser.add_argument("--in-chans", type=int, default=3, help="input channels (default: 3)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default: 1000)")
    parser.set_defaults(handler=run)


def _expand(names: list[str]) -> list[str]:
    """Names in the given order, patterns expanded; raises ValueError for a name or pattern matching nothing."""
    expanded: list[str] = []
    for name in names:
        matches = list_models(name) if any(ch in name for ch in "*?[") else [name]
        if not matches:
            raise ValueError(f"pattern {name!r} matches no registered model (see list_models())")
        expanded += [match for match in matches if match not in expanded]
    return expanded


def run(args: argparse.Namespace) -> int:
    if args.image_size < 1 or args.in_chans < 1 or args.num_classes < 1:
        print("ecanet info: --image-size, --in-chans and --num-classes must be positive", file=sys.stderr)
        return 2
    input_size = (1, args.in_chans, args.image_size, args.image_size)
    try:
        rows = [
            (name, profile_registered_model(name, input_size, num_classes=args.num_classes))
            for name in _expand(args.names)
        ]
    except ValueError as error:
        print(f"ecanet info: {error}", file=sys.stderr)
        return 2
    print(f"input {list(input_size)}, {args.num_classes} classes")
    print("M and G are decimal (10^6, 10^9); 2^20 and 2^30 are the paper's units (Table 3 counts multiply-adds")
    print("as FLOPs in 2^30). GFLOPs = 2 x GMACs, counted by torch's FlopCounterMode (convolutions and matrix")
    print("products only). Paper columns: ImageNet at 224 px, where the paper lists the model.")
    print(" ".join(f"{title:>{width}}" if i else f"{title:<{width}}" for i, (title, width) in enumerate(_COLUMNS)))
    default_setting = args.image_size == 224 and args.in_chans == 3 and args.num_classes == 1000
    for name, profile in rows:
        paper = PAPER_TABLE3.get(name) if default_setting else None
        cells = (
            name,
            f"{profile.params_millions:.2f}",
            f"{profile.params_paper_units:.2f}",
            f"{profile.attention_params:,}",
            f"{profile.gmacs:.3f}",
            f"{profile.macs_paper_units:.3f}",
            f"{2 * profile.gmacs:.3f}",
            f"{paper[0]:.2f}" if paper else "-",
            f"{paper[1]:.3f}" if paper else "-",
        )
        print(
            " ".join(
                f"{cell:>{w}}" if i else f"{cell:<{w}}"
                for i, (cell, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
            )
        )
    return 0
