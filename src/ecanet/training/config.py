"""The training configuration: one plain dataclass, saved as JSON next to every run."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecanet.training.schedule import SCHEDULES

__all__ = ["AMP_DTYPES", "COMPILE_MODES", "OPTIMIZERS", "RESUMABLE_CHANGES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")
AMP_DTYPES = (None, "bf16", "fp16")
# torch.compile modes; "reduce-overhead" replays CUDA graphs, so a host-bound GPU step stops waiting on Python.
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")
DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}
# Fields that may differ between a run and its resumption; any other difference is refused.
# data_dir is where the dataset lies, not what it is (data names that), so a moved dataset resumes.
RESUMABLE_CHANGES = frozenset({"epochs", "progress", "workers", "data_dir", "run_dir", "resume", "device", "compile"})


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``ecanet train`` has one flag per field.

    Args:
        model: a name from ``ecanet.list_models()``, or ``"package.module:function"`` for a
            function called as ``function(num_classes=..., in_chans=..., **model_kwargs)``.
        model_kwargs: extra keyword arguments of the model builder (e.g. ``{"width": 16}``).
        data: dataset name for :func:`ecanet.data.load_dataset`.
        data_dir: where the dataset's files are (not needed for the embedded ``"fashion-mnist"``).
        image_size: resize images to this square side; None keeps the dataset's own size.
        epochs: number of passes over the training set.
        batch_size: global batch size, split evenly across distributed processes.
        optimizer: ``"sgd"`` (with momentum, the paper's recipe) or ``"adamw"``.
        lr: base learning rate; None gives 0.1 for SGD and 1e-3 for AdamW.
        momentum: SGD momentum.
        weight_decay: weight decay on all parameters (decoupled for AdamW).
        schedule: ``"step"`` (x0.1 at 30/60/90% of the run's steps) or ``"cosine"``.
        warmup_epochs: epochs of linear learning-rate warmup (may be fractional).
        label_smoothing: label smoothing of the training loss.
        amp: mixed precision: None, ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU, with loss scaling).
        channels_last: use the NHWC memory format for model and inputs.
        compile: run the training forward and backward through ``torch.compile`` in this mode
            (``"default"``, ``"reduce-overhead"`` or ``"max-autotune"``); None runs eagerly.
            Evaluation and checkpoints use the module itself, so checkpoints load into an eager model.
        grad_clip: clip the global gradient norm to this value; None disables clipping.
        seed: seed of initialisation, data order, augmentation and every random generator.
        deterministic: use deterministic algorithms (slower on GPU), so equal seeds give equal numbers.
        workers: data-loader worker processes per process; None picks 0 on CPU (workers would
            compete with the compute threads) and up to 8 on GPU.
        run_dir: output directory; None gives ``runs/<model>_<data>_seed<seed>``. A run
            directory holding a checkpoint is resumed.
        resume: a checkpoint file or run directory to continue from; ``run_dir`` defaults to its directory.
        max_steps_per_epoch: cap on optimiser steps per epoch (None = the whole training set).
        sync_bn: convert BatchNorm to SyncBatchNorm in multi-GPU runs.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None picks CUDA when available.
        progress: show tqdm progress bars.

    Example:
        >>> config = TrainConfig(epochs=2, batch_size=64, model_kwargs={"width": 16})
        >>> config.validate()
        >>> config.learning_rate, config.resolved_run_dir().as_posix()
        (0.1, 'runs/eca_resnet18_fashion-mnist_seed0')
    """

    model: str = "eca_resnet18"
    model_kwargs: dict = field(default_factory=dict)
    data: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int | None = None
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    amp: str | None = None
    channels_last: bool = False
    compile: str | None = None
    grad_clip: float | None = None
    seed: int = 0
    deterministic: bool = False
    workers: int | None = None
    run_dir: str | None = None
    resume: str | None = None
    max_steps_per_epoch: int | None = None
    sync_bn: bool = False
    device: str | None = None
    progress: bool = True

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimiser's default when ``lr`` is None."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def resolved_run_dir(self) -> Path:
        """``run_dir``; else the directory of ``resume``; else ``runs/<model>_<data>_seed<seed>``."""
        if self.run_dir is not None:
            return Path(self.run_dir)
        if self.resume is not None:
            resume = Path(self.resume)
            return resume.parent if resume.is_file() else resume
        return Path("runs") / re.sub(r"[^\w.-]+", "-", f"{self.model}_{self.data}_seed{self.seed}")

    def to_dict(self) -> dict:
        """The configuration as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The configuration from a dict such as :meth:`to_dict` wrote; unknown keys are refused."""
        known = {item.name for item in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields are {sorted(known)}")
        return cls(**values)

    def validate(self) -> None:
        """Raises ValueError/TypeError naming the first invalid field, its value and what is valid."""
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_DTYPES)
        _check_choice("compile", self.compile, COMPILE_MODES)
        for name in ("epochs", "batch_size"):
            _check_number(name, getattr(self, name), integer=True, minimum=1)
        for name in ("max_steps_per_epoch", "image_size"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), integer=True, minimum=1)
        if self.workers is not None:
            _check_number("workers", self.workers, integer=True, minimum=0)
        _check_number("seed", self.seed, integer=True, minimum=0)
        for name in ("momentum", "weight_decay", "warmup_epochs", "label_smoothing"):
            _check_number(name, getattr(self, name), integer=False, minimum=0)
        if self.lr is not None:
            _check_number("lr", self.lr, integer=False, minimum=0, strict=True)
        if self.grad_clip is not None:
            _check_number("grad_clip", self.grad_clip, integer=False, minimum=0, strict=True)
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must not exceed epochs={self.epochs}, got {self.warmup_epochs}")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(self.model_kwargs).__name__}")
        if not isinstance(self.model, str) or not self.model:
            raise TypeError(f"model must be a non-empty string, got {self.model!r}")


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_number(name: str, value: object, *, integer: bool, minimum: float, strict: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    # NaN compares False with everything, so it would slip past the bound below.
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {value!r}")
