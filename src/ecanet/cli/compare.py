"""``ecanet compare``: does ECA help this model on this data, and at what cost?"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from ecanet.experiments import (
    PRESETS,
    CompareConfig,
    compare_preset,
    format_table,
    run_compare,
    summary_rows,
    with_model,
)
from ecanet.training import TrainingInterrupted
from ecanet.training.config import AMP_DTYPES, COMPILE_MODES

# Flags that override a field of the training template, by TrainConfig field name.
TRAINING_FLAGS = (
    "data",
    "data_dir",
    "image_size",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "amp",
    "compile",
    "workers",
    "device",
)
# Flags that override a field of CompareConfig.
COMPARE_FLAGS = ("seeds", "run_dir", "latency_batch_size", "latency_rounds", "confidence")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train one backbone with each attention choice and compare accuracy and cost",
        description=(
            "Trains the same backbone with each attention choice (same data, budget and seeds), measures "
            "parameters, FLOPs, inference latency and training time, and reports top-1 as mean ± std over "
            "seeds with a paired t confidence interval against the first (baseline) choice. Writes report.md, "
            "results.csv and PNG plots into the run directory; re-running reuses finished runs. Flags override "
            "the preset."
        ),
    )
    parser.add_argument("--preset", choices=PRESETS, default="demo", help="starting settings (default: demo)")
    parser.add_argument(
        "--model", help="registered ecanet model (e.g. resnet18) or torchvision:NAME / timm:NAME (none,eca only)"
    )
    parser.add_argument("--attention", help="comma-separated choices from none,eca,se,cbam; the first is the baseline")
    parser.add_argument("--seeds", type=int, help="number of seeds (runs per attention choice)")
    parser.add_argument("--data", help="fashion-mnist (embedded), fashion-mnist-full, imagefolder, cifar10, cifar100")
    parser.add_argument("--data-dir", help="dataset directory (image folder, CIFAR or Fashion-MNIST files)")
    parser.add_argument("--image-size", type=int, help="resize images to this square side")
    parser.add_argument("--run-dir", help="output directory (runs go to RUN_DIR/<attention>-seed<k>)")
    parser.add_argument("--width", type=int, help="base width of ecanet ResNets (64 = standard, 16 = tiny)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"))
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--schedule", choices=("step", "cosine"))
    parser.add_argument("--warmup-epochs", type=float)
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--max-steps-per-epoch", type=int, help="cap on optimiser steps per epoch; 0 = whole epoch")
    parser.add_argument("--amp", choices=AMP_DTYPES[1:], help="mixed precision")
    parser.add_argument(
        "--compile", choices=COMPILE_MODES[1:], help="train through torch.compile in this mode (default: eagerly)"
    )
    parser.add_argument("--workers", type=int, help="data-loader worker processes")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--latency-batch-size", type=int, help="batch size of the timed inference pass")
    parser.add_argument("--latency-rounds", type=int, help="measured rounds of the side-by-side timing")
    parser.add_argument("--confidence", type=float, help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run)


def _command_line(args: argparse.Namespace) -> str:
    """The invocation, spelled out from the parsed flags (for the report)."""
    words = ["ecanet", "compare"]
    for name, value in vars(args).items():
        if name in ("command", "handler") or value is None or value is False:
            continue
        words.append("--" + name.replace("_", "-"))
        if value is not True:
            words.append(str(value))
    return shlex.join(words)


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The preset's :class:`~ecanet.experiments.CompareConfig` with the flags given applied."""
    config = compare_preset(args.preset)
    if args.model is not None:
        config = with_model(config, args.model)
    training = dataclasses.replace(
        config.training,
        **{name: getattr(args, name) for name in TRAINING_FLAGS if getattr(args, name) is not None},
    )
    if args.width is not None:
        training.model_kwargs = {**training.model_kwargs, "width": args.width}
    if args.max_steps_per_epoch is not None:
        training.max_steps_per_epoch = args.max_steps_per_epoch or None
    if args.no_progress:
        training.progress = False
    overrides = {name: getattr(args, name) for name in COMPARE_FLAGS if getattr(args, name) is not None}
    if args.attention is not None:
        overrides["attentions"] = tuple(choice.strip() for choice in args.attention.split(",") if choice.strip())
    return dataclasses.replace(config, training=training, command=_command_line(args), **overrides)


def run(args: argparse.Namespace) -> int:
    try:
        result = run_compare(config_from_args(args))
    except TrainingInterrupted as interrupted:
        print(f"\ncompare interrupted: {interrupted}", file=sys.stderr)
        print("finished runs are kept; run the same command again to continue", file=sys.stderr)
        return 128 + interrupted.signal_number
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"ecanet compare: error: {error}", file=sys.stderr)
        return 2
    print()
    print(format_table(summary_rows(result)))
    print(f"\nreport, results.csv and plots in {result.run_dir}")
    return 0
