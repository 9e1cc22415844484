"""``ecanet train``: one flag per :class:`ecanet.training.TrainConfig` field.

Flags left out keep the dataclass defaults, so the defaults live in one place. Run it under
``torchrun --nproc_per_node N -m ecanet train ...`` for data-parallel training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ecanet.data import DATASETS
from ecanet.training import TrainConfig, TrainingInterrupted, train
from ecanet.training.config import AMP_DTYPES, COMPILE_MODES

HELP = {
    "model": "model name from `ecanet info`, or package.module:function",
    "model_kwargs": "JSON object of extra model arguments, e.g. '{\"width\": 16}'",
    "data": "dataset; fashion-mnist is the subset embedded in ecanet, the others read data_dir",
    "data_dir": "directory of the dataset files (not needed for fashion-mnist)",
    "image_size": "resize images to this square side",
    "epochs": "passes over the training set",
    "batch_size": "global batch size (split across torchrun processes)",
    "optimizer": "sgd (momentum) or adamw",
    "lr": "base learning rate (default: 0.1 for sgd, 1e-3 for adamw)",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "schedule": "step (x0.1 at 30/60/90%% of the run) or cosine",
    "warmup_epochs": "epochs of linear learning-rate warmup",
    "label_smoothing": "label smoothing of the training loss",
    "amp": "mixed precision: bf16 (CPU or GPU) or fp16 (GPU)",
    "channels_last": "NHWC memory format",
    "compile": "train through torch.compile in this mode (reduce-overhead replays CUDA graphs); without it, eagerly",
    "grad_clip": "clip the gradient norm to this value",
    "seed": "seed of everything random",
    "deterministic": "deterministic algorithms: equal seeds give equal numbers",
    "workers": "data-loader workers per process (default: 0 on CPU, up to 8 on GPU)",
    "run_dir": "output directory (default: runs/<model>_<data>_seed<seed>); an existing run resumes",
    "resume": "checkpoint file or run directory to continue from",
    "max_steps_per_epoch": "cap on optimiser steps per epoch",
    "sync_bn": "SyncBatchNorm across GPUs",
    "device": "cpu, cuda or cuda:N (default: cuda when available)",
    "progress": "tqdm progress bars",
}
CHOICES = {
    "data": tuple(DATASETS),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("step", "cosine"),
    "amp": AMP_DTYPES[1:],
    "compile": COMPILE_MODES[1:],
}


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"width\": 16}}', got {text!r}")
    return value


def _value_type(field: dataclasses.Field) -> object:
    annotation = str(field.type)
    if field.name == "model_kwargs":
        return _json_object
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    return str


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (single process, or data-parallel under torchrun)",
        description="Train a model; one flag per field of ecanet.training.TrainConfig.",
        argument_default=argparse.SUPPRESS,
    )
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = HELP[field.name]
        if "default" not in help_text:
            help_text += f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
        if field.type in ("bool", bool):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(
                flag, dest=field.name, type=_value_type(field), choices=CHOICES.get(field.name), help=help_text
            )
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the flags given (the others keep their defaults)."""
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{name: value for name, value in vars(args).items() if name in names})


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    rank = int(os.environ.get("RANK", 0))
    try:
        result = train(config)
    except TrainingInterrupted as interruption:
        if rank == 0:  # every process stops at the same step, behind the same checkpoint
            print(f"ecanet train: {interruption}", file=sys.stderr)
        return 128 + interruption.signal_number
    except (ValueError, TypeError, FileNotFoundError) as error:
        # Every process that meets an error says so: it may be its own (a dataset missing on its machine).
        where = f" (rank {rank})" if rank else ""
        print(f"ecanet train: error{where}: {error}", file=sys.stderr)
        return 2
    best_epoch = max(result.history, key=lambda row: row["val_top1"])["epoch"]
    if rank == 0:
        print(
            f"{len(result.history)} epochs; final top-1 {result.final_top1:.2f}%, best {result.best_top1:.2f}% "
            f"(epoch {best_epoch}); run directory: {result.run_dir}"
        )
    return 0
