"""What ``explain_attention`` found: one row per attention layer, as a table, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ecanet.experiments.statistics import PairedDifference
from ecanet.training.files import write_atomically

__all__ = ["AttentionReport", "LayerExplanation"]


@dataclass(frozen=True)
class LayerExplanation:
    """One attention layer: its kernel, its gates on the data, and what freezing its gate costs.

    Attributes:
        name: qualified module name, e.g. ``"layer3.1.eca"``.
        kind: ``"ECA"``, ``"SE"`` or ``"CBAM"`` (the channel branch).
        channels: channel count C.
        kernel: an ECA layer's learned taps, one row per kernel (one row, or C for ECA-NS); else empty.
        mean_gate: mean gate over images and channels.
        spread: how much the gates change from image to image (see :attr:`GateStatistics.spread`).
        class_share: share of the gates' variance over images that the class explains.
        class_means: mean gate per class and channel, ``K`` rows of ``C`` values.
        frozen_top1_change: top-1 (percentage points) with this layer's gate frozen at its per-channel
            mean, minus the network's own, with a paired interval over the images; None if not measured.
        frozen_loss_change: the same for the mean cross-entropy.
    """

    name: str
    kind: str
    channels: int
    kernel: tuple[tuple[float, ...], ...]
    mean_gate: float
    spread: float
    class_share: float
    class_means: tuple[tuple[float, ...], ...]
    frozen_top1_change: PairedDifference | None = None
    frozen_loss_change: PairedDifference | None = None

    @property
    def kernel_size(self) -> int | None:
        """The ECA layer's k, or None for other layers."""
        return len(self.kernel[0]) if self.kernel else None

    @property
    def neighbour_share(self) -> float | None:
        """Share of the kernel's absolute weight on neighbouring channels rather than the channel
        itself: 0 for a kernel that ignores its neighbours. None for layers without a kernel."""
        if not self.kernel:
            return None
        centre = len(self.kernel[0]) // 2
        total = sum(abs(tap) for row in self.kernel for tap in row)
        own = sum(abs(row[centre]) for row in self.kernel)
        return (total - own) / total if total > 0 else 0.0


@dataclass(frozen=True)
class AttentionReport:
    """Every attention layer of a network, explained on a labelled dataset.

    Attributes:
        model: a name for the network.
        classes: class names, index = label.
        images: images the statistics and accuracies are over.
        accuracy: top-1 (%) of the network as it is.
        loss: its mean cross-entropy.
        layers: one entry per attention layer, in module order.
        chance_class_share: the class share expected of gates that ignore the class.
        all_frozen_top1_change: the change in top-1 (percentage points) with every ECA and SE gate frozen
            at once, with a paired interval over the images; None if not measured.
        all_frozen_loss_change: the same for the mean cross-entropy.
    """

    model: str
    classes: tuple[str, ...]
    images: int
    accuracy: float
    loss: float
    layers: tuple[LayerExplanation, ...]
    chance_class_share: float
    all_frozen_top1_change: PairedDifference | None = None
    all_frozen_loss_change: PairedDifference | None = None

    def table(self) -> str:
        """A Markdown table of the layers, under a line on the network and the data."""
        lines = [
            f"{self.model} on {self.images} images: top-1 {self.accuracy:.2f}%, loss {self.loss:.4f}; "
            f"class share by chance {self.chance_class_share:.4f}",
            "",
            "| layer | kind | C | k | kernel | neighbour share | mean gate | spread | class share "
            "| frozen gate: Δtop-1 (pp) [95% CI] | Δloss [95% CI] |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for layer in self.layers:
            neighbours = "" if layer.neighbour_share is None else f"{layer.neighbour_share:.2f}"
            lines.append(
                f"| {layer.name} | {layer.kind} | {layer.channels} | {_text(layer.kernel_size)} "
                f"| {_kernel_text(layer.kernel)} | {neighbours} | {layer.mean_gate:.3f} | {layer.spread:.3f} "
                f"| {layer.class_share:.3f} | {_change(layer.frozen_top1_change, '+.2f')} "
                f"| {_change(layer.frozen_loss_change, '+.4f')} |"
            )
        if self.all_frozen_top1_change is not None:
            lines.append(
                f"| all frozen | | | | | | | | | {_change(self.all_frozen_top1_change, '+.2f')} "
                f"| {_change(self.all_frozen_loss_change, '+.4f')} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Everything, JSON-ready: the per-class means included, and None for every value that is not a
        number (the means of a class without images, the spread of a change over a single image)."""
        values = dataclasses.asdict(self)
        for row, layer in zip(values["layers"], self.layers, strict=True):
            row["kernel_size"], row["neighbour_share"] = layer.kernel_size, layer.neighbour_share
        return _without_nans(values)

    def write_json(self, path: str | Path) -> Path:
        """Writes :meth:`to_dict` as strict JSON, atomically."""
        write_atomically(path, json.dumps(self.to_dict(), indent=2, allow_nan=False).encode())
        return Path(path)

    def write_csv(self, path: str | Path) -> Path:
        """Writes one row per layer (the per-class means left to the JSON file), atomically."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        changes = [f"frozen_{what}_{end}" for what in ("top1", "loss") for end in ("change", "low", "high")]
        writer.writerow(
            ["layer", "kind", "channels", "kernel_size", "kernel", "neighbour_share", "mean_gate", "spread",
             "class_share", *changes, "accuracy", "loss"]
        )  # fmt: skip
        for layer in self.layers:
            writer.writerow(
                [layer.name, layer.kind, layer.channels, _text(layer.kernel_size), _kernel_text(layer.kernel),
                 _text(layer.neighbour_share), layer.mean_gate, layer.spread, layer.class_share,
                 *_change_cells(layer.frozen_top1_change), *_change_cells(layer.frozen_loss_change),
                 self.accuracy, self.loss]
            )  # fmt: skip
        write_atomically(path, buffer.getvalue().encode())
        return Path(path)


def _without_nans(value: object) -> object:
    """``value`` with every NaN float inside its dicts, lists and tuples replaced by None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nans(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nans(item) for item in value]
    return value


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _change(change: PairedDifference | None, spec: str) -> str:
    """``mean [low, high]``, or a dash when not measured."""
    if change is None:
        return "—"
    if change.low is None or change.high is None:
        return format(change.mean, spec)
    return f"{change.mean:{spec}} [{change.low:{spec}}, {change.high:{spec}}]"


def _change_cells(change: PairedDifference | None) -> list[str]:
    """The mean and the interval's ends as CSV cells, empty when not measured."""
    if change is None:
        return ["", "", ""]
    return [str(change.mean), _text(change.low), _text(change.high)]


def _kernel_text(kernel: tuple[tuple[float, ...], ...]) -> str:
    """The taps of a shared kernel; the shape of per-channel ones."""
    if not kernel:
        return ""
    if len(kernel) > 1:
        return f"{len(kernel)} kernels of {len(kernel[0])}"
    return " ".join(f"{tap:+.2f}" for tap in kernel[0])
