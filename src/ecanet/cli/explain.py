"""``ecanet explain CHECKPOINT``: what each attention layer of a trained network does on its test images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ecanet.cli.trust import add_trust_model_code
from ecanet.data import load_dataset
from ecanet.dependencies import require
from ecanet.explain import explain_attention, plot_attention, plot_gates_by_class
from ecanet.training.trained_model import load_trained_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="per-layer gates, class specificity and the cost of freezing each attention layer of a trained network",
        description=(
            "Rebuilds the network of a checkpoint written by `ecanet train` and runs it over its dataset: for "
            "every channel attention layer (ECA, SE, CBAM, torchvision's and timm's), the mean gate, how much the "
            "gates change from image to image, the share of that change the class explains, the learned ECA "
            "kernel, and the top-1 with the layer's gate frozen at its mean (one pass per layer). Prints a table "
            "and writes attention.csv, attention.json, attention.png and "
            "gates-by-class.png."
        ),
    )
    parser.add_argument("checkpoint", help="a checkpoint written by `ecanet train`")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="which split (default: test)")
    parser.add_argument("--data-dir", help="where the dataset's files are now (default: the run's data_dir)")
    parser.add_argument("--limit", type=int, metavar="N", help="a random N images of the split (default: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    parser.add_argument("--no-freeze", action="store_true", help="skip the passes with frozen gates")
    parser.add_argument(
        "--layers",
        metavar="NAME,NAME",
        help="modules to explain, by qualified name (default: every ECA, SE and CBAM layer, and those of "
        "torchvision and timm)",
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--out", help="output directory (default: explain/ beside the checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_trust_model_code(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    require("plotting", "matplotlib")  # the plots come last: fail before the work
    for name in ("limit", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"ecanet explain: error: --{name.replace('_', '-')} must be positive, got {value}", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "explain"
    if out.exists() and not out.is_dir():
        print(f"ecanet explain: error: the output directory {str(out)!r} is a file: pass --out DIR", file=sys.stderr)
        return 2
    try:
        trained = load_trained_model(args.checkpoint, trust_model_code=args.trust_model_code)
        config = trained.config
        data, info = load_dataset(
            config.data,
            args.data_dir or config.data_dir,
            train=args.split == "train",
            augment=False,
            seed=config.seed,
            image_size=config.image_size,
        )
        if args.limit is not None and args.limit < len(data):
            chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: args.limit]
            data = Subset(data, sorted(chosen.tolist()))
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        report = explain_attention(
            trained.model.to(device),
            DataLoader(data, batch_size=args.batch_size),
            info.classes,
            freeze=not args.no_freeze,
            layers=[name.strip() for name in args.layers.split(",") if name.strip()] if args.layers else None,
            name=f"{config.model} after {trained.epoch} epochs",
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"ecanet explain: error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, RuntimeError) else 1
    out.mkdir(parents=True, exist_ok=True)
    written = [
        report.write_csv(out / "attention.csv"),
        report.write_json(out / "attention.json"),
        plot_attention(report, out / "attention.png"),
        plot_gates_by_class(report, out / "gates-by-class.png"),
    ]
    print(report.table())
    print("\nwrote " + ", ".join(str(path) for path in written))
    return 0
