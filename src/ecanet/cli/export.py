"""``ecanet export CHECKPOINT --output FILE``: a trained network as ONNX or a ``torch.export`` program."""

from __future__ import annotations

import argparse
import sys

import torch

from ecanet import __version__
from ecanet.cli.trust import add_trust_model_code
from ecanet.export import FORMATS, export_model
from ecanet.training.trained_model import load_trained_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a trained network as ONNX or a torch.export program, checked against the eager network",
        description=(
            "Rebuilds the network of a checkpoint written by `ecanet train` (last.pt or best.pt), exports it "
            "for its dataset's input size, runs the file and compares it with the eager network, and writes "
            "it only if they agree. The file carries the class names and the input normalisation."
        ),
    )
    parser.add_argument("checkpoint", help="a checkpoint written by `ecanet train`")
    parser.add_argument("--output", required=True, help="the file to write: *.onnx or *.pt2")
    parser.add_argument("--format", choices=FORMATS, help="the format (default: from the output's suffix)")
    parser.add_argument(
        "--static-batch",
        type=int,
        metavar="N",
        help="export for batches of exactly N images (default: any batch size)",
    )
    add_trust_model_code(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.static_batch is not None and args.static_batch < 1:
        print(f"ecanet export: error: --static-batch must be positive, got {args.static_batch}", file=sys.stderr)
        return 2
    try:
        trained = load_trained_model(args.checkpoint, trust_model_code=args.trust_model_code)
        info = trained.info
        size = info.image_size
        example = torch.randn(
            args.static_batch or 2,
            info.in_chans,
            size,
            size,
            generator=torch.Generator().manual_seed(0),
        )
        metadata = {
            "model": trained.config.model,
            "epoch": trained.epoch,
            "dataset": info.name,
            "classes": list(info.classes),
            "input": f"(N, {info.in_chans}, {size}, {size}) float32, (pixels in [0, 1] - mean) / std",
            "mean": list(info.mean),
            "std": list(info.std),
            "ecanet_version": __version__,
        }
        report = export_model(
            trained.model,
            example,
            args.output,
            format=args.format,
            dynamic_batch=args.static_batch is None,
            metadata=metadata,
        )
    except (FileNotFoundError, ImportError, ValueError, RuntimeError) as error:
        print(f"ecanet export: error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, RuntimeError) else 1
    batches = " and ".join(map(str, report.batch_sizes))
    print(
        f"wrote {report.path} ({report.format}, {report.size_bytes / 2**20:.1f} MiB): {trained.config.model} after "
        f"{trained.epoch} epochs; run at batch {batches}, it differs from the eager network by at most "
        f"{report.max_abs_error:.2g} (outputs up to {report.output_scale:.2g})"
    )
    return 0
