"""Turns a :class:`CompareResult` into rows, a terminal table, ``results.csv`` and ``report.md``."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecanet.bench.timing import TimingStats, paired_ratio
from ecanet.experiments.results import CompareResult
from ecanet.experiments.statistics import PAIRED_TEST_NAME, mean_std, paired_difference
from ecanet.training.files import write_atomically

__all__ = ["CSV_COLUMNS", "format_table", "summary_rows", "write_csv", "write_markdown"]

# results.csv holds raw numbers (no units in the cells): percentages in %, times in ms or s.
CSV_COLUMNS = (
    "attention",
    "seeds",
    "params",
    "params_delta",
    "flops",
    "flops_delta",
    "latency_ms",
    "latency_p25_ms",
    "latency_p75_ms",
    "latency_batch_size",
    "latency_change_pct",
    "latency_change_low_pct",
    "latency_change_high_pct",
    "throughput_images_per_s",
    "train_step_ms",
    "train_batch_size",
    "train_step_change_pct",
    "train_step_change_low_pct",
    "train_step_change_high_pct",
    "epoch_seconds",
    "epoch_seconds_change_pct",
    "top1_mean",
    "top1_std",
    "top5_mean",
    "top5_std",
    "top1_delta",
    "top1_delta_low",
    "top1_delta_high",
    "confidence",
)

# Top-5 of a 5-class (or smaller) problem is always 100 %: not worth a column.
MIN_CLASSES_FOR_TOP5 = 6


def summary_rows(result: CompareResult) -> list[dict[str, Any]]:
    """One row per variant with the columns of :data:`CSV_COLUMNS` (raw numbers, ``None`` if n/a).

    Deltas are ``variant - baseline``; ``top1_delta_low/high`` bound a paired t interval over seeds
    (``None`` with a single seed); ``top5_*`` are ``None`` for 5 classes or fewer. The latency and
    training-step changes are the medians of the timing rounds' own ratios to the baseline, with
    their distribution-free interval at the compare's confidence
    (:func:`ecanet.bench.timing.paired_ratio`); without per-round samples, the medians' ratio
    and no interval (``None``).

    Args:
        result: a finished compare.

    Returns:
        Rows in the order of ``result.variants`` (the baseline first).

    Example:
        >>> from ecanet.experiments.results import VariantResult
        >>> from ecanet.bench.timing import TimingStats
        >>> def variant(name, params, top1s):
        ...     rows = [[{"val_top1": t, "val_top5": 99.0, "epoch_seconds": 3.0}] for t in top1s]
        ...     timing = TimingStats(0.01, 0.01, 0.01, 3)
        ...     return VariantResult(name, (0, 1), tuple(rows), params, 10**6, timing, 8, timing, 16, ())
        >>> result = CompareResult(Path("."), "resnet18", "fashion-mnist", 10, (1, 1, 28, 28), 1, 0.95,
        ...                        (variant("none", 1000, [80.0, 82.0]), variant("eca", 1012, [81.0, 84.0])), {})
        >>> row = summary_rows(result)[1]
        >>> row["params_delta"], row["top1_mean"], row["top1_delta"]
        (12, 82.5, 1.5)
    """
    baseline = result.baseline
    base_epoch = baseline.epoch_seconds
    with_top5 = result.num_classes >= MIN_CLASSES_FOR_TOP5
    rows = []
    for variant in result.variants:
        if variant.seeds != baseline.seeds:
            raise ValueError(
                f"variant {variant.attention!r} was trained with seeds {variant.seeds} but the baseline "
                f"{baseline.attention!r} with {baseline.seeds}: a paired comparison needs the same seeds"
            )
        top1_mean, top1_std = mean_std(variant.final_top1)
        top5_mean, top5_std = mean_std(variant.final_top5) if with_top5 else (None, None)
        difference = paired_difference(variant.final_top1, baseline.final_top1, result.confidence)
        latency_change = _change_pct(variant.latency, baseline.latency, result.confidence)
        step_change = _change_pct(variant.train_step, baseline.train_step, result.confidence)
        rows.append(
            {
                "attention": variant.attention,
                "seeds": len(variant.seeds),
                "params": variant.params,
                "params_delta": variant.params - baseline.params,
                "flops": variant.flops,
                "flops_delta": variant.flops - baseline.flops,
                "latency_ms": variant.latency.median_s * 1e3,
                "latency_p25_ms": variant.latency.p25_s * 1e3,
                "latency_p75_ms": variant.latency.p75_s * 1e3,
                "latency_batch_size": variant.latency_batch_size,
                "latency_change_pct": latency_change[0],
                "latency_change_low_pct": latency_change[1],
                "latency_change_high_pct": latency_change[2],
                "throughput_images_per_s": variant.throughput,
                "train_step_ms": variant.train_step.median_s * 1e3,
                "train_batch_size": variant.train_batch_size,
                "train_step_change_pct": step_change[0],
                "train_step_change_low_pct": step_change[1],
                "train_step_change_high_pct": step_change[2],
                "epoch_seconds": variant.epoch_seconds,
                "epoch_seconds_change_pct": (variant.epoch_seconds / base_epoch - 1.0) * 100.0,
                "top1_mean": top1_mean,
                "top1_std": _none_if_nan(top1_std),
                "top5_mean": top5_mean,
                "top5_std": _none_if_nan(top5_std),
                "top1_delta": difference.mean,
                "top1_delta_low": difference.low,
                "top1_delta_high": difference.high,
                "confidence": result.confidence,
            }
        )
    return rows


def _change_pct(
    timing: TimingStats, baseline: TimingStats, confidence: float
) -> tuple[float, float | None, float | None]:
    """``timing`` over ``baseline`` in percent: the paired median with its interval's ends, or the
    medians' ratio and no interval where the rounds were not kept."""
    paired = paired_ratio(timing, baseline, confidence)
    if math.isnan(paired.median):
        return (timing.median_s / baseline.median_s - 1.0) * 100.0, None, None
    low, high = (None, None) if paired.low is None else ((paired.low - 1.0) * 100.0, (paired.high - 1.0) * 100.0)
    return (paired.median - 1.0) * 100.0, low, high


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _count(value: float) -> str:
    """A count in decimal units: 11.69M, 701.3k, 1.82G."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _with_change(value: float, change_pct: float, is_baseline: bool, digits: int = 2) -> str:
    return f"{value:.{digits}f}" + ("" if is_baseline else f" ({change_pct:+.1f}%)")


def _timed(row: dict[str, Any], measure: str, is_baseline: bool) -> str:
    """``row[f"{measure}_ms"]`` with its paired change to the baseline and, where kept, its interval."""
    if is_baseline:
        return f"{row[f'{measure}_ms']:.2f}"
    low, high = row.get(f"{measure}_change_low_pct"), row.get(f"{measure}_change_high_pct")
    interval = "" if low is None else f" [{low:+.1f}, {high:+.1f}]"
    return f"{row[f'{measure}_ms']:.2f} ({row[f'{measure}_change_pct']:+.1f}%{interval})"


def _delta(row: dict[str, Any], is_baseline: bool) -> str:
    if is_baseline:
        return "baseline"
    if row["top1_delta_low"] is None:
        return f"{row['top1_delta']:+.2f} (1 seed: no CI)"
    return f"{row['top1_delta']:+.2f} [{row['top1_delta_low']:+.2f}, {row['top1_delta_high']:+.2f}]"


def _table_cells(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    confidence = round(rows[0]["confidence"] * 100)
    headers = [
        "attention",
        "params",
        "Δparams",
        "FLOPs",
        f"infer ms (batch {rows[0]['latency_batch_size']})",
        "infer img/s",
        f"train ms/step (batch {rows[0]['train_batch_size']})",
        "s/epoch",
        "top-1 %",
        f"Δtop-1 [{confidence}% CI]",
    ]
    with_top5 = rows[0]["top5_mean"] is not None
    if with_top5:
        headers.append("top-5 %")
    body = []
    for index, row in enumerate(rows):
        is_baseline = index == 0
        cells = [
            row["attention"],
            _count(row["params"]),
            "—" if is_baseline else f"{row['params_delta']:+d}",
            _count(row["flops"]),
            _timed(row, "latency", is_baseline),
            f"{row['throughput_images_per_s']:.0f}",
            _timed(row, "train_step", is_baseline),
            _with_change(row["epoch_seconds"], row["epoch_seconds_change_pct"], is_baseline, digits=1),
            _mean_std(row["top1_mean"], row["top1_std"]),
            _delta(row, is_baseline),
        ]
        if with_top5:
            cells.append(_mean_std(row["top5_mean"], row["top5_std"]))
        body.append(cells)
    return headers, body


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The comparison as an aligned text table (terminal) or a Markdown table.

    Args:
        rows: output of :func:`summary_rows`, baseline first.
        markdown: pipe-separated Markdown instead of space-aligned columns.

    Returns:
        The table, lines joined by newlines (no trailing newline).

    Example:
        >>> row = dict(attention="none", params=1000, params_delta=0, flops=2e6, flops_delta=0, latency_ms=1.5,
        ...            latency_change_pct=0.0, latency_batch_size=8, throughput_images_per_s=5333.0,
        ...            train_step_ms=9.0, train_batch_size=16, train_step_change_pct=0.0,
        ...            epoch_seconds=3.0, epoch_seconds_change_pct=0.0, top1_mean=80.0, top1_std=None,
        ...            top5_mean=None, top5_std=None, top1_delta=0.0, top1_delta_low=None, top1_delta_high=None,
        ...            confidence=0.95)
        >>> table = format_table([row]).splitlines()
        >>> table[0].split("  ")[:4]
        ['attention', 'params', 'Δparams', 'FLOPs']
        >>> table[1].split()
        ['none', '1.00k', '—', '2.00M', '1.50', '5333', '9.00', '3.0', '80.00', 'baseline']
    """
    if not rows:
        raise ValueError("rows must hold at least one variant, got none")
    headers, body = _table_cells(rows)
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *body]
    )


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Writes ``rows`` (from :func:`summary_rows`) as CSV with the header :data:`CSV_COLUMNS`.

    Missing values (``None``) become empty cells.

    Args:
        path: destination file, written atomically.
        rows: one dict per variant.

    Returns:
        The written path.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = write_csv(Path(tmp) / "results.csv", [{"attention": "none", "seeds": 1}])
        ...     out.read_text().splitlines()[1][:8]
        'none,1,,'
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    write_atomically(path, buffer.getvalue().encode())
    return Path(path)


def write_markdown(
    path: str | Path,
    result: CompareResult,
    rows: Sequence[dict[str, Any]],
    plots: Sequence[str] = (),
    command: str | None = None,
) -> Path:
    """Writes ``report.md``: the setting, the table, how to read it, per-seed numbers and plots.

    Args:
        path: destination file, written atomically.
        result: the compare the rows came from.
        rows: output of :func:`summary_rows`.
        plots: PNG file names relative to the report, embedded in order.
        command: the command line that produced the compare, quoted in the report.

    Returns:
        The written path.

    Example::

        result = compare(CompareConfig())
        rows = summary_rows(result)
        write_markdown(result.run_dir / "report.md", result, rows, plots=["accuracy_curves.png"])
    """
    baseline = result.baseline
    seeds = len(baseline.seeds)
    confidence = round(result.confidence * 100)
    settings = ", ".join(f"{key}={value}" for key, value in result.settings.items())
    lines = [
        f"# Does ECA help {result.model} on {result.data}?",
        "",
        f"Attention variants of `{result.model}` trained with identical data, budget and seeds "
        f"({_plural(seeds, 'seed')}: {', '.join(map(str, baseline.seeds))}; "
        f"{_plural(result.epochs, 'epoch')} each), input {tuple(result.input_size[1:])}, "
        f"{result.num_classes} classes.",
        "",
    ]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [f"Training settings: {settings}.", "", format_table(rows, markdown=True), "", "## How to read it", ""]
    lines += [
        "- **top-1 / top-5**: validation accuracy (%) after the last epoch (not the best epoch, which would be "
        "picked on the validation set itself), mean ± sample standard deviation over seeds.",
        f"- **Δtop-1**: mean per-seed difference to the baseline `{baseline.attention}` (same seed = same "
        f"data order and augmentation), with a {confidence}% confidence interval: {PAIRED_TEST_NAME}, "
        f"mean ± t(n - 1 = {_plural(seeds - 1, 'degree')} of freedom) × std / √n of the per-seed differences. "
        + (
            "With one seed there is no interval."
            if seeds < 2
            else "An interval that contains 0 means the data cannot tell the variant from the baseline."
        ),
        f"- **infer ms**: median wall-clock time of one inference forward pass on a batch of "
        f"{baseline.latency_batch_size}; **train ms/step**: the same for one training step (forward, loss, "
        f"backward, SGD update) on a batch of {baseline.train_batch_size}. All variants are timed side by side "
        f"in one process, in alternating and rotating order over {baseline.latency.rounds} rounds, so load "
        "from other processes hits them alike; the change relative to the baseline is in brackets: the median "
        f"of the rounds' own ratios to the baseline, with its {confidence}% distribution-free interval "
        "(order statistics of those ratios) where enough rounds were kept. "
        "**infer img/s** follows from the inference time.",
        "- **s/epoch**: median wall-clock time of one epoch of the actual runs (training plus its evaluation "
        "pass), over all epochs and seeds. The runs trained one after another, so on a shared machine this "
        "column is noisier than the side-by-side ones.",
        "- **params / FLOPs**: decimal units (k = 10^3, M = 10^6, G = 10^9). FLOPs of one image as "
        "`ecanet.profile_model` counts them with PyTorch's FlopCounterMode: convolutions and matrix products, "
        "2 per multiply-add (the paper's 'FLOPs' count multiply-adds, in units of 2^30). Pooling, gates and "
        "other elementwise work are not counted for any variant, so ECA's k multiply-adds per channel can "
        "show as +0.",
        "",
        "## Per-seed top-1 (%)",
        "",
        "| attention | " + " | ".join(f"seed {seed}" for seed in baseline.seeds) + " |",
        "|" + "|".join(" --- " for _ in range(seeds + 1)) + "|",
    ]
    lines += [
        f"| {variant.attention} | " + " | ".join(f"{value:.2f}" for value in variant.final_top1) + " |"
        for variant in result.variants
    ]
    for variant in result.variants:
        if variant.eca_layers:
            sizes = ", ".join(str(layer.kernel_size) for layer in variant.eca_layers)
            lines += ["", f"ECA kernel sizes of `{variant.attention}` ({len(variant.eca_layers)} layers): {sizes}."]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in plots]
    write_atomically(path, ("\n".join(lines) + "\n").encode())
    return Path(path)
