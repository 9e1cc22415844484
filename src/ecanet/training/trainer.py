"""``train(config)``: the training loop, with checkpoints, resumption, signals and torchrun support.

One epoch: shuffle (seed + epoch), train with the configured optimiser, schedule and precision,
evaluate top-1/top-5 on the test split, append a history row, write ``last.pt`` (and ``best.pt``)
atomically, rewrite the metric files. Rank 0 alone writes; every number is reduced over ranks.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Subset

from ecanet.data import DatasetInfo, load_dataset
from ecanet.dependencies import require
from ecanet.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from ecanet.training.config import RESUMABLE_CHANGES, TrainConfig
from ecanet.training.distributed import DistributedContext
from ecanet.training.files import write_atomically
from ecanet.training.metrics import MetricsWriter, topk_correct
from ecanet.training.plots import plot_history
from ecanet.training.sampler import EpochSampler
from ecanet.training.schedule import LearningRateSchedule

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "TRAINING_PACKAGES",
    "TrainResult",
    "TrainingInterrupted",
    "build_model",
    "train",
]

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TRAINING_PACKAGES = ("tqdm", "matplotlib")
"""What a run needs beyond ``pip install ecanet`` (the ``train`` extra): progress bars and ``curves.png``."""
AMP = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Args:
        run_dir: the run's directory (metrics, config, checkpoints).
        history: one dict per epoch: epoch (from 1), lr (at the epoch's first step), train_loss,
            train_top1, val_loss, val_top1, val_top5, epoch_seconds, images_per_second (training
            images per second over all processes); accuracies in percent.
        best_top1: best validation top-1 (percent).
        final_top1: validation top-1 after the last epoch (percent).
        model: the trained model (last epoch's weights, eval mode).
    """

    run_dir: Path
    history: list[dict]
    best_top1: float
    final_top1: float
    model: nn.Module


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved; re-running resumes.

    Args:
        signal_number: the signal received.
        checkpoint: the checkpoint written before stopping.
    """

    def __init__(self, signal_number: int, checkpoint: Path) -> None:
        self.signal_number = signal_number
        self.checkpoint = checkpoint
        name = signal.Signals(signal_number).name
        super().__init__(f"stopped by {name}; checkpoint saved to {checkpoint}; run the same command again to resume")


def build_model(config: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The model named by ``config.model``, sized for the dataset ``info``.

    Registered names go through ``ecanet.create_model`` (with ``small_input`` for images of 64
    pixels or less); ``"package.module:function"`` calls that function with ``num_classes``,
    ``in_chans`` and ``config.model_kwargs``.

    Args:
        config: the run's configuration.
        info: the dataset description.

    Example:
        >>> info = DatasetInfo("toy", 10, 1, 28, (0.5,), (0.5,), tuple("abcdefghij"))
        >>> model = build_model(TrainConfig(model="eca_resnet18", model_kwargs={"width": 8}), info)
        >>> model.fc.out_features
        10
    """
    if ":" in config.model:
        module_name, _, function_name = config.model.partition(":")
        try:
            builder = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"model={config.model!r}: cannot import {function_name!r} from {module_name!r}") from error
        return builder(num_classes=info.num_classes, in_chans=info.in_chans, **config.model_kwargs)
    from ecanet.models import create_model

    return create_model(
        config.model,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        small_input=info.image_size <= 64,
        **config.model_kwargs,
    )


def train(config: TrainConfig, model: nn.Module | None = None) -> TrainResult:
    """Trains (or resumes, or returns a finished run) as ``config`` describes.

    Under ``torchrun`` each process joins the process group, trains its shard of every batch with
    DistributedDataParallel, and rank 0 writes ``run_dir``. A ``run_dir`` holding ``last.pt``
    resumes from it; one whose checkpoint is at ``config.epochs`` returns at once.

    Args:
        config: the run's configuration.
        model: train this model instead of building ``config.model`` (its name is still recorded).

    Raises:
        MissingDependency: tqdm or matplotlib (the ``train`` extra) is missing or too old; raised
            before any work.
        TrainingInterrupted: SIGINT/SIGTERM arrived; a checkpoint was saved first.

    Example:
        >>> import tempfile
        >>> config = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=2, run_dir=tempfile.mkdtemp(),
        ...                      progress=False)
        >>> result = train(config, model=nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)))
        >>> [row["epoch"] for row in result.history], (result.run_dir / "last.pt").is_file()
        ([1], True)
    """
    config.validate()
    require("training", *TRAINING_PACKAGES)
    context = DistributedContext.start(config.device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        return _Run(config, context).execute(model)
    finally:
        if torch.are_deterministic_algorithms_enabled() != deterministic_before:
            torch.use_deterministic_algorithms(deterministic_before)
        context.close()


def _saved_epoch(path: Path) -> int | None:
    """The epoch of the checkpoint at ``path``, or ``None`` where there is none or it cannot be read."""
    try:
        return int(load_checkpoint(path)["epoch"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


class _Run:
    """One call of :func:`train`: state shared by the steps of the loop."""

    def __init__(self, config: TrainConfig, context: DistributedContext) -> None:
        self.config = config
        self.context = context
        self.device = context.device
        self.run_dir = config.resolved_run_dir()
        self.amp_dtype = AMP[config.amp]
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
        if config.sync_bn and self.device.type != "cuda":
            raise ValueError("sync_bn=True needs CUDA devices (PyTorch's SyncBatchNorm has no CPU implementation)")
        if config.batch_size % context.world_size:
            raise ValueError(
                f"batch_size={config.batch_size} (global) must be divisible by the {context.world_size} processes"
            )

    def execute(self, model: nn.Module | None) -> TrainResult:
        checkpoint = self._find_checkpoint()
        if checkpoint is not None and self.context.is_main:
            self._complete_epoch_outputs(checkpoint)
        if checkpoint is not None and checkpoint["epoch"] >= self.config.epochs:
            if model is None:
                model = build_model(self.config, DatasetInfo(**checkpoint["dataset"]))
            model.load_state_dict(checkpoint["model"])
            return _result(self.run_dir, checkpoint["history"], model.eval())
        self._seed(self.config.seed)
        config = self.config
        train_set, info = load_dataset(
            config.data, config.data_dir, train=True, augment=True, seed=config.seed, image_size=config.image_size
        )
        val_set, _ = load_dataset(
            config.data, config.data_dir, train=False, augment=False, seed=config.seed, image_size=config.image_size
        )
        self.info = info
        self.model = self._prepare_model(model if model is not None else build_model(config, info))
        self._make_loaders(train_set, val_set)
        self.optimizer = _make_optimizer(config, self.model.parameters())
        self.schedule = LearningRateSchedule(config.schedule, config.epochs, self.steps_per_epoch, config.warmup_epochs)
        # A plain function, so the scheduler's state holds no copy of the schedule: it comes from the config.
        self.scheduler = LambdaLR(self.optimizer, lambda step: self.schedule(step))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self._seed(config.seed + self.context.rank)
        self.history: list[dict] = []
        self.best_top1 = -math.inf
        position = (0, 0, _no_totals(), 0.0)
        if checkpoint is not None:
            position = self._restore(checkpoint)
        # The DDP wrapper in distributed runs (it all-reduces the gradients), else the model itself.
        self.parallel_model = (
            DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
            if self.context.distributed
            else self.model
        )
        # What the training step calls: that wrapper, compiled if asked (evaluation and checkpoints
        # use the module itself, so nothing saved depends on the compiler).
        self.step_model = (
            self.parallel_model if config.compile is None else torch.compile(self.parallel_model, mode=config.compile)
        )
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.run_dir / "config.json", (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        self.writer = MetricsWriter(self.run_dir) if self.context.is_main else None
        try:
            self._loop(*position)
        finally:
            if self.writer is not None:
                self.writer.close()
        self._record_parameter_digests()
        if self.context.is_main:
            plot_history(self.history, self.run_dir / "curves.png", title=f"{config.model} on {config.data}")
        # Every rank leaves together: a rank tearing down the group while rank 0 still writes
        # can abort inside gloo at exit.
        self.context.barrier()
        return _result(self.run_dir, self.history, self.model.eval())

    def _find_checkpoint(self) -> dict | None:
        """Rank 0 reads the checkpoint to resume from and shares it, so other nodes need no shared disk."""
        checkpoint = None
        if self.context.is_main:
            path = None
            if self.config.resume is not None:
                resume = Path(self.config.resume)
                if not resume.exists():
                    raise FileNotFoundError(f"resume={self.config.resume!r} does not exist")
                path = resume / LAST_CHECKPOINT if resume.is_dir() else resume
            elif (self.run_dir / LAST_CHECKPOINT).is_file():
                path = self.run_dir / LAST_CHECKPOINT
            if path is not None:
                try:
                    checkpoint = load_checkpoint(path)
                except ValueError as error:  # the file is left as it is: nothing is lost
                    best = path.with_name(BEST_CHECKPOINT)
                    other = f"resume from resume={str(best)!r} (the best epoch) or " if best != path else ""
                    raise ValueError(f"{error}; {other}start over in another run_dir") from error
        if self.context.distributed:
            shared = [checkpoint]
            torch.distributed.broadcast_object_list(shared, src=0)
            checkpoint = shared[0]
        if checkpoint is not None:
            # lr None stands for the optimiser's default: compare the learning rates themselves.
            stored = {**checkpoint["config"], "lr": TrainConfig.from_dict(checkpoint["config"]).learning_rate}
            current = {**self.config.to_dict(), "lr": self.config.learning_rate}
            changed = sorted(key for key in current if key not in RESUMABLE_CHANGES and stored.get(key) != current[key])
            if changed:
                details = ", ".join(f"{key}: {stored.get(key)!r} -> {current[key]!r}" for key in changed)
                raise ValueError(
                    f"run_dir={str(self.run_dir)!r} holds a run with a different configuration ({details}); "
                    "use another run_dir for a new run"
                )
            # Fewer epochs cannot be served: the saved weights (and history) are those of the longer run.
            trained = checkpoint["epoch"] + (checkpoint["step"] > 0)
            if self.config.epochs < trained:
                part = f" and {checkpoint['step']} steps of epoch {trained}" if checkpoint["step"] else ""
                raise ValueError(
                    f"run_dir={str(self.run_dir)!r} holds {checkpoint['epoch']} finished epochs{part}, more than "
                    f"epochs={self.config.epochs}; use epochs >= {trained}, or another run_dir for a shorter run"
                )
        return checkpoint

    def _complete_epoch_outputs(self, checkpoint: dict) -> None:
        """Writes what a crash after ``last.pt`` (the commit point of an epoch) kept from being written.

        The files after it: ``best.pt`` when the checkpoint's epoch is the best, the metric files and,
        for a finished run, ``curves.png``. Files already complete are left untouched.
        """
        history = checkpoint["history"]
        if checkpoint["step"] or not history:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The first epoch with the highest top-1, as the loop's strict comparison picks it.
        best_epoch = max(history, key=lambda row: row["val_top1"])["epoch"]
        best = self.run_dir / BEST_CHECKPOINT
        if best_epoch == checkpoint["epoch"] and _saved_epoch(best) != best_epoch:
            save_checkpoint(checkpoint, best)
        metrics = self.run_dir / "metrics.jsonl"
        if not metrics.is_file() or len(metrics.read_text().splitlines()) != len(history):
            writer = MetricsWriter(self.run_dir)
            writer.write(history)
            writer.close()
        curves, last = self.run_dir / "curves.png", self.run_dir / LAST_CHECKPOINT
        # curves.png is drawn after the last epoch's last.pt: an older one predates the final epochs.
        stale = not curves.is_file() or (last.is_file() and curves.stat().st_mtime_ns < last.stat().st_mtime_ns)
        if checkpoint["epoch"] >= self.config.epochs and stale:
            plot_history(history, curves, title=f"{self.config.model} on {self.config.data}")

    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if torch.are_deterministic_algorithms_enabled() != self.config.deterministic:
            torch.use_deterministic_algorithms(self.config.deterministic, warn_only=True)
        torch.backends.cudnn.benchmark = not self.config.deterministic

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        if self.config.sync_bn and self.context.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model.to(self.device, memory_format=self.memory_format)

    def _make_loaders(self, train_set: torch.utils.data.Dataset, val_set: torch.utils.data.Dataset) -> None:
        config, context = self.config, self.context
        self.steps_per_epoch = len(train_set) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={config.batch_size} exceeds the {len(train_set)} training images")
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        workers = config.workers
        if workers is None:
            workers = 0 if self.device.type == "cpu" else min(8, (os.cpu_count() or 1) // context.world_size)
        self.per_process_batch = config.batch_size // context.world_size
        self.train_set = train_set
        self.sampler = EpochSampler(train_set, rank=context.rank, world_size=context.world_size, seed=config.seed)
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(
            train_set, self.per_process_batch, sampler=self.sampler, num_workers=workers, drop_last=True, pin_memory=pin
        )
        # Every rank evaluates every world_size-th image: no padding, so the reduced counts are exact.
        shard = Subset(val_set, range(context.rank, len(val_set), context.world_size))
        self.val_loader = DataLoader(shard, 2 * self.per_process_batch, num_workers=workers, pin_memory=pin)

    def _restore(self, checkpoint: dict) -> tuple[int, int, Tensor, float]:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        states = checkpoint["rng"]
        restore_rng_state(states[self.context.rank] if len(states) == self.context.world_size else states[0])
        self.history = list(checkpoint["history"])
        self.best_top1 = checkpoint["best_top1"]
        return checkpoint["epoch"], checkpoint["step"], checkpoint["totals"], checkpoint["seconds"]

    def _loop(self, start_epoch: int, start_step: int, totals: Tensor, seconds: float) -> None:
        from tqdm.auto import tqdm

        show = self.config.progress and self.context.is_main
        with (
            _StopSignals() as stop,
            tqdm(
                total=self.config.epochs, initial=start_epoch, desc="epochs", unit="epoch", disable=not show
            ) as epochs_bar,
        ):
            for epoch in range(start_epoch, self.config.epochs):
                if epoch > start_epoch:
                    start_step, totals, seconds = 0, _no_totals(), 0.0
                totals, seconds = self._train_epoch(epoch, start_step, totals, seconds, stop, show)
                started = time.perf_counter()
                val_loss, val_top1, val_top5 = self._evaluate()
                loss_sum, top1, count = totals.tolist()
                row = {
                    "epoch": epoch + 1,
                    "lr": self.config.learning_rate * self.schedule(epoch * self.steps_per_epoch),
                    "train_loss": loss_sum / count,
                    "train_top1": 100.0 * top1 / count,
                    "val_loss": val_loss,
                    "val_top1": val_top1,
                    "val_top5": val_top5,
                    "epoch_seconds": seconds + time.perf_counter() - started,
                    "images_per_second": count / seconds,
                }
                self.history.append(row)
                is_best = val_top1 > self.best_top1
                self.best_top1 = max(self.best_top1, val_top1)
                self._save(epoch + 1, 0, _no_totals(), 0.0, best=is_best)
                if self.writer is not None:
                    self.writer.write(self.history)
                epochs_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_top1=f"{val_top1:.2f}")
                epochs_bar.update()
                # After the last epoch's checkpoint the run is finished: it writes its outputs rather than stopping.
                if epoch + 1 < self.config.epochs and self.context.any(stop.signal_number is not None):
                    raise TrainingInterrupted(stop.signal_number or signal.SIGTERM, self.run_dir / LAST_CHECKPOINT)

    def _train_epoch(
        self, epoch: int, start_step: int, totals: Tensor, seconds: float, stop: _StopSignals, show: bool
    ) -> tuple[Tensor, float]:
        """Trains ``epoch`` from ``start_step`` on; ``totals`` and ``seconds`` are those of the steps before it.

        Returns the epoch's sums over all ranks (loss x images, top-1 hits, images) and its training seconds.
        """
        from tqdm.auto import tqdm

        self.model.train()
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=start_step * self.per_process_batch)
        local = torch.zeros(3, dtype=torch.float64, device=self.device)
        session_start = time.perf_counter()
        batches = itertools.islice(self.train_loader, self.steps_per_epoch - start_step)
        bar = tqdm(
            total=self.steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}", leave=False, disable=not show
        )
        with bar:
            for step, (images, targets) in enumerate(batches, start=start_step):
                loss, logits, targets = self._train_step(images, targets)
                (top1,) = topk_correct(logits.detach(), targets, ks=(1,))
                local += torch.stack(
                    [loss.detach().double() * len(targets), local.new_tensor(top1), local.new_tensor(len(targets))]
                )
                bar.update()
                if show and (step % 10 == 0 or step + 1 == self.steps_per_epoch):
                    loss_sum, correct, count = local.tolist()
                    rate = self.context.world_size * count / (time.perf_counter() - session_start)
                    bar.set_postfix(
                        loss=f"{loss_sum / count:.3f}", acc=f"{100 * correct / count:.1f}", img_s=f"{rate:.0f}"
                    )
                if self.context.any(stop.signal_number is not None):
                    elapsed = seconds + time.perf_counter() - session_start
                    self._save(epoch, step + 1, totals + self.context.all_reduce_sum(local).cpu(), elapsed, best=False)
                    raise TrainingInterrupted(stop.signal_number or signal.SIGTERM, self.run_dir / LAST_CHECKPOINT)
        return totals + self.context.all_reduce_sum(local).cpu(), seconds + time.perf_counter() - session_start

    def _train_step(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        targets = targets.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.step_model(images)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        # Backward on this thread rather than autograd's per-device worker: on one GPU per process
        # the worker gains nothing, and Python in the backward (ECA's fused Function) ran about
        # twice as slowly there (an ECA layer's training step on an H200: 673 against 369 us).
        with torch.autograd.set_multithreading_enabled(False):
            self.scaler.scale(loss).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss, logits, targets

    @torch.no_grad()
    def _evaluate(self) -> tuple[float, float, float]:
        """Validation loss (plain cross-entropy), top-1 and top-5 in percent, over the whole split."""
        self.model.eval()
        self.context.broadcast_buffers(self.model)
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for images, targets in self.val_loader:
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            targets = targets.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.model(images).float()
            top1, top5 = topk_correct(logits, targets, ks=(1, 5))
            loss = F.cross_entropy(logits, targets, reduction="sum")
            sums += torch.stack(
                [loss.double(), sums.new_tensor(top1), sums.new_tensor(top5), sums.new_tensor(targets.shape[0])]
            )
        loss_sum, top1, top5, count = self.context.all_reduce_sum(sums).tolist()
        return loss_sum / count, 100.0 * top1 / count, 100.0 * top5 / count

    def _save(self, epoch: int, step: int, totals: Tensor, seconds: float, *, best: bool) -> None:
        """Writes ``last.pt`` (and ``best.pt``): a collective call, since every rank's RNG state is gathered.

        ``epoch`` counts finished epochs; ``step``, ``totals`` and ``seconds`` describe the part of the
        next epoch already trained (zero at an epoch boundary).
        """
        rng = self.context.gather(capture_rng_state())
        if not self.context.is_main:
            return
        state = {
            "config": self.config.to_dict(),
            "dataset": dataclasses.asdict(self.info),
            "epoch": epoch,
            "step": step,
            "totals": totals,
            "seconds": seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "history": self.history,
            "best_top1": self.best_top1,
            "world_size": self.context.world_size,
        }
        save_checkpoint(state, self.run_dir / LAST_CHECKPOINT)
        if best:
            save_checkpoint(state, self.run_dir / BEST_CHECKPOINT)

    def _record_parameter_digests(self) -> None:
        """Distributed runs record each rank's parameter digest: equal digests prove the replicas agree."""
        if not self.context.distributed:
            return
        digests = self.context.parameter_digests(self.model)
        if self.context.is_main:
            record = {
                "world_size": self.context.world_size,
                "backend": self.context.backend,
                "parameter_sha256": digests,
            }
            write_atomically(self.run_dir / "distributed.json", (json.dumps(record, indent=2) + "\n").encode())


def _no_totals() -> Tensor:
    """Sums of an epoch not yet started: loss x images, top-1 hits, images."""
    return torch.zeros(3, dtype=torch.float64)


def _make_optimizer(config: TrainConfig, parameters: object) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def _result(run_dir: Path, history: list[dict], model: nn.Module) -> TrainResult:
    top1 = [row["val_top1"] for row in history]
    return TrainResult(run_dir, history, max(top1), top1[-1], model)


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after every step; a second signal stops at once."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: object) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = number

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
