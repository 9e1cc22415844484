"""PNG plots of an :class:`AttentionReport`: the layers side by side, and per-class gates of a few layers.

matplotlib (the ``train`` extra) comes from :func:`ecanet.training.plots.pyplot`, imported inside the
functions with the headless Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path

from ecanet.explain.report import AttentionReport, LayerExplanation
from ecanet.training.plots import pyplot, save_figure

__all__ = ["plot_attention", "plot_gates_by_class"]


def plot_attention(report: AttentionReport, path: str | Path) -> Path:
    """Every attention layer, in network order: mean gate (bars: ± spread over images), the share of
    the gates' variance the class explains, the change in top-1 with the layer's gate frozen, and the
    learned ECA kernels (taps by offset from the channel itself).

    Args:
        report: from :func:`ecanet.explain.explain_attention`.
        path: destination PNG, written atomically.

    Returns:
        The written path.

    Example::

        report = explain_attention(model, loader, classes)
        plot_attention(report, "attention.png")
    """
    plt = pyplot()
    layers = report.layers
    positions = list(range(len(layers)))
    frozen = any(layer.static_accuracy is not None for layer in layers)
    kernels = any(layer.kernel for layer in layers)
    panels = 2 + frozen + kernels
    figure, axes = plt.subplots(panels, 1, figsize=(max(7.0, 0.45 * len(layers) + 2), 2.4 * panels + 1), sharex=True)
    gate_axis, share_axis, *rest = axes
    gate_axis.errorbar(
        positions, [layer.mean_gate for layer in layers], yerr=[layer.spread for layer in layers], fmt="o", capsize=3
    )
    gate_axis.set(ylabel="mean gate", ylim=(0, 1), title=f"{report.model}: attention on {report.images} images")
    share_axis.bar(positions, [layer.class_share for layer in layers], color="tab:purple")
    share_axis.axhline(report.chance_class_share, color="grey", linestyle="--", label="chance")
    share_axis.set(ylabel="class share of\ngate variance")
    share_axis.legend(loc="upper left")
    if frozen:
        frozen_axis = rest.pop(0)
        changes = [_change(layer.static_accuracy, report.accuracy) for layer in layers]
        frozen_axis.bar(positions, changes, color=["tab:red" if change < 0 else "tab:green" for change in changes])
        if report.all_static_accuracy is not None:
            all_change = report.all_static_accuracy - report.accuracy
            frozen_axis.axhline(all_change, color="black", linestyle=":", label=f"all frozen: {all_change:+.2f} pp")
            frozen_axis.legend(loc="lower left")
        frozen_axis.axhline(0, color="grey", linewidth=0.8)
        frozen_axis.set(ylabel="Δtop-1 (pp),\ngate frozen")
    if kernels:
        _plot_kernels(rest.pop(0), layers, figure)
    axes[-1].set_xticks(positions, [layer.name for layer in layers], rotation=60, ha="right", fontsize=8)
    for axis in axes:
        axis.grid(alpha=0.3, axis="y")
    return save_figure(figure, path)


def _change(value: float | None, baseline: float) -> float:
    return math.nan if value is None else value - baseline


def _plot_kernels(axis: object, layers: tuple[LayerExplanation, ...], figure: object) -> None:
    """The shared kernels as a heat map: one column per layer, one row per tap offset (mean over the
    channels' kernels for ECA-NS); empty for layers without a kernel."""
    reach = max(len(layer.kernel[0]) // 2 for layer in layers if layer.kernel)
    grid = [[math.nan] * len(layers) for _ in range(2 * reach + 1)]
    for column, layer in enumerate(layers):
        if not layer.kernel:
            continue
        half = len(layer.kernel[0]) // 2
        for tap in range(len(layer.kernel[0])):
            grid[reach - half + tap][column] = sum(row[tap] for row in layer.kernel) / len(layer.kernel)
    limit = max(abs(value) for row in grid for value in row if not math.isnan(value)) or 1.0
    image = axis.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axis.set_yticks(range(2 * reach + 1), [f"{offset:+d}" for offset in range(-reach, reach + 1)])
    axis.set(ylabel="ECA kernel:\nchannel offset")
    # An inset colour bar leaves the panel as wide as the ones above it.
    figure.colorbar(image, cax=axis.inset_axes((1.01, 0.0, 0.015, 1.0)))


def plot_gates_by_class(report: AttentionReport, path: str | Path, *, layers: int = 4) -> Path:
    """The mean gate of every channel per class, for ``layers`` layers spread from first to last.

    Channels are sorted by their mean gate over all images, so that classes pulling a channel up or
    down stand out from the common profile (gates that ignore the class give one curve).

    Args:
        report: from :func:`ecanet.explain.explain_attention`.
        path: destination PNG, written atomically.
        layers: how many layers to show.

    Returns:
        The written path.

    Example::

        plot_gates_by_class(explain_attention(model, loader, classes), "gates-by-class.png")
    """
    plt = pyplot()
    count = min(layers, len(report.layers))
    chosen = [report.layers[round(i * (len(report.layers) - 1) / max(count - 1, 1))] for i in range(count)]
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False, layout="constrained")
    for axis, layer in zip(axes.flat, chosen, strict=False):
        overall = [sum(column) / len(column) for column in zip(*_present(layer.class_means), strict=True)]
        order = sorted(range(layer.channels), key=overall.__getitem__)
        for label, means in enumerate(layer.class_means):
            if not math.isnan(means[0]):
                axis.plot([means[c] for c in order], linewidth=1, label=report.classes[label])
        axis.set(
            title=f"{layer.name} ({layer.kind}, C={layer.channels}): class share {layer.class_share:.2f}",
            xlabel="channel, by mean gate",
            ylabel="mean gate",
        )
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=8)
    return save_figure(figure, path)


def _present(class_means: tuple[tuple[float, ...], ...]) -> list[tuple[float, ...]]:
    """The rows of classes that had images."""
    return [row for row in class_means if not math.isnan(row[0])]
