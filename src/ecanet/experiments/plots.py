"""PNG plots of a compare: accuracy curves with seed bands, accuracy vs latency, ECA kernel sizes.

matplotlib (the ``train`` extra) comes from :func:`ecanet.training.plots.pyplot`: imported inside the
functions with the headless Agg backend, so importing ecanet never needs it.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from ecanet.experiments.results import CompareResult, EcaLayer
from ecanet.experiments.statistics import mean_std
from ecanet.training.plots import pyplot, save_figure

__all__ = ["plot_accuracy_curves", "plot_accuracy_vs_latency", "plot_eca_kernel_sizes"]


def plot_accuracy_curves(result: CompareResult, path: str | Path) -> Path:
    """Validation top-1 per epoch for every variant: the seed mean as a line, min to max as a band.

    Args:
        result: a finished compare.
        path: destination PNG, written atomically.

    Returns:
        The written path.

    Example::

        result = compare(CompareConfig(attentions=("none", "eca")))
        plot_accuracy_curves(result, result.run_dir / "accuracy_curves.png")
    """
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for variant in result.variants:
        epochs = [int(row["epoch"]) for row in variant.histories[0]]
        # Seeds share the epoch count; a run cut short would only shorten the band.
        length = min(len(history) for history in variant.histories)
        per_epoch = [[float(history[i]["val_top1"]) for history in variant.histories] for i in range(length)]
        means = [statistics.fmean(values) for values in per_epoch]
        (line,) = axes.plot(epochs[:length], means, marker="o", label=variant.attention)
        if len(variant.seeds) > 1:
            axes.fill_between(
                epochs[:length],
                [min(values) for values in per_epoch],
                [max(values) for values in per_epoch],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    seeds = len(result.baseline.seeds)
    band = f"band: min-max over {seeds} seeds" if seeds > 1 else "1 seed"
    axes.set(
        xlabel="epoch",
        ylabel="validation top-1 (%)",
        title=f"{result.model} on {result.data}: mean over seeds ({band})",
    )
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend(title="attention")
    return save_figure(figure, path)


def plot_accuracy_vs_latency(result: CompareResult, path: str | Path) -> Path:
    """Final top-1 (mean, ± std over seeds) against inference latency (median, quartile whiskers).

    Args:
        result: a finished compare.
        path: destination PNG, written atomically.

    Returns:
        The written path.

    Example::

        result = compare(CompareConfig(attentions=("none", "eca", "se")))
        plot_accuracy_vs_latency(result, result.run_dir / "accuracy_vs_latency.png")
    """
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for variant in result.variants:
        mean, std = mean_std(variant.final_top1)
        latency_ms = variant.latency.median_s * 1e3
        axes.errorbar(
            [latency_ms],
            [mean],
            xerr=[[latency_ms - variant.latency.p25_s * 1e3], [variant.latency.p75_s * 1e3 - latency_ms]],
            yerr=None if len(variant.seeds) < 2 else [std],
            fmt="o",
            capsize=4,
            label=variant.attention,
        )
        axes.annotate(variant.attention, (latency_ms, mean), textcoords="offset points", xytext=(6, 6))
    axes.set(
        xlabel=f"inference latency, batch {result.baseline.latency_batch_size} (ms, median; whiskers p25-p75)",
        ylabel="final validation top-1 (%)",
        title=f"{result.model}: accuracy vs latency",
    )
    axes.grid(alpha=0.3)
    axes.legend(title="attention")
    return save_figure(figure, path)


def plot_eca_kernel_sizes(layers: tuple[EcaLayer, ...] | list[EcaLayer], path: str | Path, title: str = "") -> Path:
    """Kernel size k of every ECA layer, in network order, with the layer's channel count.

    Args:
        layers: the ECA layers of one model, in network order (at least one).
        path: destination PNG, written atomically.
        title: plot title (default: a generic one).

    Returns:
        The written path.

    Example:
        >>> import tempfile
        >>> layers = [EcaLayer(f"layer{i}.0.eca", c, k) for i, (c, k) in enumerate([(64, 3), (128, 5), (256, 5)], 1)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     plot_eca_kernel_sizes(layers, Path(tmp) / "k.png").stat().st_size > 0
        True
    """
    if not layers:
        raise ValueError("layers must hold at least one ECA layer, got none")
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(max(5.0, 0.35 * len(layers) + 2.0), 4.0))
    positions = list(range(len(layers)))
    axes.bar(positions, [layer.kernel_size for layer in layers], color="tab:blue", label="kernel size k")
    axes.set_xticks(positions, [layer.name for layer in layers], rotation=60, ha="right", fontsize=8)
    axes.set(ylabel="kernel size k", title=title or "ECA kernel size per layer")
    axes.set_yticks(range(1, max(layer.kernel_size for layer in layers) + 2, 2))
    channels_axis = axes.twinx()
    channels = [math.nan if layer.channels is None else layer.channels for layer in layers]
    channels_axis.plot(positions, channels, "k.--", label="channels C")
    channels_axis.set_ylabel("channels C")
    handles = axes.get_legend_handles_labels()[0] + channels_axis.get_legend_handles_labels()[0]
    axes.legend(handles, [h.get_label() for h in handles], loc="upper left")
    return save_figure(figure, path)
