"""PNG plots of an :class:`AttentionReport`: the layers side by side, and per-class gates of a few layers.

matplotlib (the ``train`` extra) comes from :func:`ecanet.training.plots.pyplot`, imported inside the
functions with the headless Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ecanet.explain.report import AttentionReport, LayerExplanation
from ecanet.training.plots import pyplot, save_figure

__all__ = ["plot_attention", "plot_gates_by_class"]


def plot_attention(report: AttentionReport, path: str | Path) -> Path:
    """Every attention layer, in network order: mean gate (bars: ± spread over images), the share of
    the gates' variance the class explains, the change in top-1 with the layer's gate frozen (with
    its 95% interval), and the learned ECA kernels (taps by offset from the channel itself).

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
    frozen = any(layer.frozen_top1_change is not None for layer in layers)
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
        changes = [layer.frozen_top1_change for layer in layers]
        means = [math.nan if change is None else change.mean for change in changes]
        frozen_axis.bar(positions, means, color=["tab:red" if mean < 0 else "tab:green" for mean in means])
        measured = [
            (x, change) for x, change in zip(positions, changes, strict=True) if change and change.low is not None
        ]
        frozen_axis.errorbar(
            [x for x, _ in measured],
            [change.mean for _, change in measured],
            yerr=[
                [change.mean - change.low for _, change in measured],
                [change.high - change.mean for _, change in measured],
            ],
            fmt="none",
            ecolor="black",
            capsize=3,
        )
        if report.all_frozen_top1_change is not None:
            all_change = report.all_frozen_top1_change.mean
            frozen_axis.axhline(all_change, color="black", linestyle=":", label=f"all frozen: {all_change:+.2f} pp")
            frozen_axis.legend(loc="lower left")
        frozen_axis.axhline(0, color="grey", linewidth=0.8)
        frozen_axis.set(ylabel="Δtop-1 (pp), gate\nfrozen (95% CI)")
    if kernels:
        _plot_kernels(rest.pop(0), layers, figure)
    axes[-1].set_xticks(positions, [layer.name for layer in layers], rotation=60, ha="right", fontsize=8)
    for axis in axes:
        axis.grid(alpha=0.3, axis="y")
    return save_figure(figure, path)


def _plot_kernels(axis: Any, layers: tuple[LayerExplanation, ...], figure: Any) -> None:
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
    """Heat maps of each class's mean gate minus the mean over all images, channel by channel, for
    ``layers`` layers spread from first to last.

    Channels are grouped by the class that raises them most, strongest first, so channels that
    serve one class show as blocks; gates that ignore the class give an even, pale map. Classes
    without images are left out.

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
    present = [label for label, means in enumerate(report.layers[0].class_means) if not math.isnan(means[0])]
    height = 0.25 * len(present) + 1.2
    figure, axes = plt.subplots(count, 1, figsize=(10, height * count), squeeze=False, layout="constrained")
    for axis, layer in zip(axes[:, 0], chosen, strict=True):
        rows = [layer.class_means[label] for label in present]
        overall = [sum(column) / len(column) for column in zip(*rows, strict=True)]
        deviations = [[mean - common for mean, common in zip(row, overall, strict=True)] for row in rows]
        order = sorted(range(layer.channels), key=lambda c: _strongest_class(deviations, c))
        grid = [[row[c] for c in order] for row in deviations]
        limit = max(abs(value) for row in grid for value in row) or 1.0
        image = axis.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        axis.set_yticks(range(len(present)), [report.classes[label] for label in present], fontsize=8)
        axis.set(
            title=f"{layer.name} ({layer.kind}, C={layer.channels}): class share {layer.class_share:.2f}",
            xlabel="channel, grouped by the class that raises it most",
        )
        figure.colorbar(image, ax=axis, label="class mean gate\n- mean gate", fraction=0.03, pad=0.01)
    return save_figure(figure, path)


def _strongest_class(deviations: list[list[float]], channel: int) -> tuple[int, float]:
    """Sort key of a channel: the class that raises its gate most, then the largest rise first."""
    rises = [row[channel] for row in deviations]
    strongest = max(range(len(rises)), key=rises.__getitem__)
    return strongest, -rises[strongest]
