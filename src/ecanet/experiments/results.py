"""What a compare produces: per-variant measurements and training histories, before any formatting."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecanet.bench.timing import TimingStats

__all__ = ["CompareResult", "EcaLayer", "VariantResult"]


@dataclass(frozen=True)
class EcaLayer:
    """One ECA layer of a model: where it sits, how wide it is and the kernel size it uses.

    Attributes:
        name: qualified module name, e.g. ``"layer1.0.eca"``.
        channels: channel count C of the layer's input (``None`` if the layer was built without it).
        kernel_size: the layer's k.
    """

    name: str
    channels: int | None
    kernel_size: int


@dataclass(frozen=True)
class VariantResult:
    """Everything measured for one attention choice of the compared backbone.

    Attributes:
        attention: the attention choice (``"none"``, ``"eca"``, ``"se"``, ``"cbam"``).
        seeds: the training seeds, in the order of ``histories``.
        histories: per seed, the trainer's per-epoch rows (``val_top1``, ``epoch_seconds``, ...).
        params: number of parameters.
        flops: FLOPs of one forward pass of one image (as :func:`ecanet.profile_model` counts them).
        latency: side-by-side inference timing of one batch of ``latency_batch_size`` images.
        latency_batch_size: batch size of the timed forward pass.
        train_step: side-by-side timing of one training step on ``train_batch_size`` images.
        train_batch_size: batch size of the timed training step (the runs' batch size).
        eca_layers: the model's ECA layers (empty without ECA).

    Example:
        >>> row = {"epoch": 1, "val_top1": 80.0, "val_top5": 99.0, "epoch_seconds": 2.0}
        >>> timing = TimingStats(0.01, 0.009, 0.011, 5)
        >>> v = VariantResult("eca", (0,), ([row],), 1000, 5000, timing, 32, timing, 64, ())
        >>> v.final_top1, round(v.throughput, 1), v.epoch_seconds
        ([80.0], 3200.0, 2.0)
    """

    attention: str
    seeds: tuple[int, ...]
    histories: tuple[list[dict[str, Any]], ...]
    params: int
    flops: int
    latency: TimingStats
    latency_batch_size: int
    train_step: TimingStats
    train_batch_size: int
    eca_layers: tuple[EcaLayer, ...]

    @property
    def final_top1(self) -> list[float]:
        """Validation top-1 (%) after the last epoch, one value per seed."""
        return [float(history[-1]["val_top1"]) for history in self.histories]

    @property
    def final_top5(self) -> list[float]:
        """Validation top-5 (%) after the last epoch, one value per seed."""
        return [float(history[-1]["val_top5"]) for history in self.histories]

    @property
    def epoch_seconds(self) -> float:
        """Median training time of one epoch over all epochs of all seeds."""
        return statistics.median(float(row["epoch_seconds"]) for history in self.histories for row in history)

    @property
    def throughput(self) -> float:
        """Inference images per second at the timed batch size (from the median latency)."""
        return self.latency_batch_size / self.latency.median_s


@dataclass(frozen=True)
class CompareResult:
    """A finished compare: the variants side by side, and the setting they were measured in.

    Attributes:
        run_dir: directory holding the per-variant runs, the report, the CSV and the plots.
        model: the compared backbone (registered name or ``torchvision:NAME`` / ``timm:NAME``).
        data: dataset name.
        num_classes: number of classes of the dataset.
        input_size: shape of one batch of one image, ``(1, C, H, W)``.
        epochs: training epochs of every run.
        confidence: level of the confidence intervals, e.g. 0.95.
        variants: one result per attention choice; the first one is the baseline.
        settings: the training settings shared by all runs, for the report.
    """

    run_dir: Path
    model: str
    data: str
    num_classes: int
    input_size: tuple[int, ...]
    epochs: int
    confidence: float
    variants: tuple[VariantResult, ...]
    settings: dict[str, Any]

    @property
    def baseline(self) -> VariantResult:
        """The variant every other one is compared against (the first one)."""
        return self.variants[0]
