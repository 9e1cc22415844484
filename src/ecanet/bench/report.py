"""Benchmark results: one row per measured candidate, a printed table, CSV and a PNG chart."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ecanet.bench.timing import TimingStats, paired_ratio
from ecanet.training.files import write_atomically
from ecanet.training.plots import pyplot, save_figure

__all__ = ["BenchRow", "format_table", "plot_rows", "rows_from_stats", "write_csv"]


@dataclass(frozen=True)
class BenchRow:
    """One candidate measured in one case.

    Attributes:
        group: ``"layer"`` (attention alone), ``"tail"`` (block tail: attention, + shortcut,
            ReLU), ``"call"`` (small calls against the bare pool and rescale), ``"model"`` or
            ``"host"`` (a block on the GPU's route up to Triton's launcher, on CPU tensors).
        case: what was measured, e.g. ``"32x256x56x56"`` or ``"resnet50 b8 224px"``.
        memory_format: ``"nchw"`` or ``"channels_last"``.
        dtype: ``"float32"`` or ``"bfloat16"``.
        mode: ``"inference"``, ``"training"``, ``"inference-compiled"``, or on a GPU
            ``"training-compiled"`` and ``"inference-graphed"`` / ``"training-graphed"``
            (replayed from CUDA graphs).
        candidate: implementation name.
        median_ms, p25_ms, p75_ms: time per call in milliseconds.
        rounds: measured rounds.
        reference: candidate the ratios compare against (``timm`` for layers, ``none`` for tails
            and models).
        reference_ms: the reference's median.
        floor_ms: memory-traffic floor (bytes that must move / copy bandwidth measured in the
            same rounds), or ``nan`` where none applies.
        paired_overhead_pct: extra time over the reference in percent as the median of the
            rounds' own ratios (:func:`ecanet.bench.timing.paired_ratio`), or ``nan`` without
            per-round samples.
        paired_low_pct, paired_high_pct: the ends of the paired overhead's 95% distribution-free
            interval, or ``nan`` without one (fewer than 6 rounds).
    """

    group: str
    case: str
    memory_format: str
    dtype: str
    mode: str
    candidate: str
    median_ms: float
    p25_ms: float
    p75_ms: float
    rounds: int
    reference: str
    reference_ms: float
    floor_ms: float
    paired_overhead_pct: float = float("nan")
    paired_low_pct: float = float("nan")
    paired_high_pct: float = float("nan")

    @property
    def speedup(self) -> float:
        """``reference / this``: above 1 means faster than the reference."""
        return self.reference_ms / self.median_ms

    @property
    def overhead_pct(self) -> float:
        """Extra time over the reference in percent (negative: faster)."""
        return 100.0 * (self.median_ms / self.reference_ms - 1.0)

    @property
    def extra_us(self) -> float:
        """Extra time over the reference in microseconds (negative: faster)."""
        return 1e3 * (self.median_ms - self.reference_ms)

    @property
    def floor_pct(self) -> float:
        """Time as a percentage of the memory-traffic floor (100 = at the floor)."""
        return 100.0 * self.median_ms / self.floor_ms


def rows_from_stats(
    group: str,
    case: str,
    memory_format: str,
    dtype: str,
    mode: str,
    stats: dict[str, TimingStats],
    reference: str,
    floor_ms: float = float("nan"),
) -> list[BenchRow]:
    """One :class:`BenchRow` per timed candidate of one case, in milliseconds, against ``reference``.

    Example:
        >>> stats = {"none": TimingStats(0.002, 0.0019, 0.0021, 3, (0.0019, 0.002, 0.0021)),
        ...          "eca": TimingStats(0.003, 0.0029, 0.0031, 3, (0.0029, 0.003, 0.0031))}
        >>> rows = rows_from_stats("tail", "c", "nchw", "float32", "inference", stats, "none")
        >>> [round(row.overhead_pct) for row in rows], [round(row.paired_overhead_pct) for row in rows]
        ([0, 50], [0, 50])
    """
    reference_stats = stats[reference]
    rows = []
    for name, timing in stats.items():
        paired = paired_ratio(timing, reference_stats)
        rows.append(
            BenchRow(
                group,
                case,
                memory_format,
                dtype,
                mode,
                name,
                timing.median_s * 1e3,
                timing.p25_s * 1e3,
                timing.p75_s * 1e3,
                timing.rounds,
                reference,
                reference_stats.median_s * 1e3,
                floor_ms,
                _percent_over(paired.median),
                _percent_over(paired.low),
                _percent_over(paired.high),
            )
        )
    return rows


def _percent_over(ratio: float | None) -> float:
    """``ratio`` as extra time in percent, ``nan`` for no ratio."""
    return float("nan") if ratio is None else 100.0 * (ratio - 1.0)


def format_table(rows: Sequence[BenchRow]) -> str:
    """A fixed-width text table of medians, speedups, overheads (in %, of the medians and paired
    round by round with the paired one's 95% interval, and in microseconds) and % of the floor.

    Example:
        >>> row = BenchRow("layer", "2x8x4x4", "nchw", "float32", "inference", "ecanet", 1.0, 0.9, 1.1, 15,
        ...                "timm", 2.0, 0.8, -49.0, -52.5, -45.0)
        >>> print(format_table([row]))  # doctest: +NORMALIZE_WHITESPACE
        group case format dtype mode candidate median_ms p25-p75 vs ref overhead paired paired 95% extra_us % floor
        layer 2x8x4x4 nchw float32 inference ecanet 1.000 0.900-1.100 2.00x -50.0% -49.0% -52.5..-45.0% -1000 125%
    """
    header = (
        "group",
        "case",
        "format",
        "dtype",
        "mode",
        "candidate",
        "median_ms",
        "p25-p75",
        "vs ref",
        "overhead",
        "paired",
        "paired 95%",
        "extra_us",
    )
    lines = []
    for r in rows:
        floor = "" if r.floor_ms != r.floor_ms else f"{r.floor_pct:.0f}%"
        lines.append(
            (
                r.group,
                r.case,
                r.memory_format,
                r.dtype,
                r.mode,
                r.candidate,
                f"{r.median_ms:.3f}",
                f"{r.p25_ms:.3f}-{r.p75_ms:.3f}",
                f"{r.speedup:.2f}x",
                f"{r.overhead_pct:+.1f}%",
                "" if r.paired_overhead_pct != r.paired_overhead_pct else f"{r.paired_overhead_pct:+.1f}%",
                "" if r.paired_low_pct != r.paired_low_pct else f"{r.paired_low_pct:+.1f}..{r.paired_high_pct:+.1f}%",
                f"{r.extra_us:+.0f}",
                floor,
            )
        )
    header = (*header, "% floor")
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    numeric = set(range(6, len(header)))

    def render(cells: Sequence[str]) -> str:
        return " ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([render(header)] + [render(line) for line in lines]).rstrip()


def write_csv(rows: Sequence[BenchRow], path: str | Path) -> None:
    """Writes ``rows`` (plus the derived speedup, overhead and floor columns) to ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "bench.csv"
        >>> row = BenchRow("layer", "c", "nchw", "float32", "inference", "ecanet", 1.0, 0.9, 1.1, 5, "timm", 2.0, 0.8)
        >>> write_csv([row], target)
        >>> target.read_text().splitlines()[1]
        'layer,c,nchw,float32,inference,ecanet,1.0,0.9,1.1,5,timm,2.0,0.8,nan,nan,nan,2.0,-50.0,-1000.0,125.0'
    """
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([f.name for f in fields(BenchRow)] + ["speedup", "overhead_pct", "extra_us", "floor_pct"])
    for row in rows:
        derived = [round(row.speedup, 4), round(row.overhead_pct, 2), round(row.extra_us, 1), round(row.floor_pct, 1)]
        writer.writerow([*asdict(row).values(), *derived])
    write_atomically(path, text.getvalue().encode())


def plot_rows(rows: Sequence[BenchRow], path: str | Path) -> None:
    """Bar charts of the medians, one panel per (group, mode), cases side by side, as a PNG.

    Each bar is normalised to the panel's reference candidate in the same case (so 1.0 is the
    reference and lower is faster) and labelled with that ratio; a whisker spans the 95% interval
    of the round-by-round ratio where there is one, and the memory-traffic floor, where the panel
    has one, is drawn as a black tick.

    Args:
        rows: benchmark rows.
        path: PNG file to write (atomically).
    """
    plt = pyplot()
    panels = sorted({(r.group, r.mode) for r in rows})
    most_cases = max(len({_case_label(r) for r in rows if (r.group, r.mode) == panel}) for panel in panels)
    width_inches = max(14.0, 1.1 * most_cases)  # a case label is about an inch wide
    figure, axes = plt.subplots(len(panels), 1, figsize=(width_inches, 3.6 * len(panels)), squeeze=False)
    for axis, (group, mode) in zip(axes[:, 0], panels, strict=True):
        chosen = [r for r in rows if r.group == group and r.mode == mode]
        cases = list(dict.fromkeys(_case_label(r) for r in chosen))
        candidates = list(dict.fromkeys(r.candidate for r in chosen))
        width = 0.8 / len(candidates)
        tallest = 1.0
        for j, candidate in enumerate(candidates):
            bars = [
                (cases.index(_case_label(r)), r.median_ms / r.reference_ms) for r in chosen if r.candidate == candidate
            ]
            heights = [h for _, h in bars]
            drawn = axis.bar([i + j * width for i, _ in bars], heights, width, label=candidate)
            axis.bar_label(drawn, [f"{h:.2f}" for h in heights], fontsize=6, padding=1)
            tallest = max(tallest, *heights)
            intervals = [
                (cases.index(_case_label(r)) + j * width, 1 + r.paired_low_pct / 100, 1 + r.paired_high_pct / 100)
                for r in chosen
                if r.candidate == candidate and r.candidate != r.reference and r.paired_low_pct == r.paired_low_pct
            ]
            if intervals:
                x, low, high = zip(*intervals, strict=True)
                axis.vlines(x, low, high, colors="dimgrey", linewidth=1)
                tallest = max(tallest, *high)
        floors = [next(r.floor_ms / r.reference_ms for r in chosen if _case_label(r) == case) for case in cases]
        for i, floor in enumerate(floors):
            if floor == floor:  # not nan
                axis.hlines(floor, i - width / 2, i + 0.8 - width / 2, colors="black", linewidth=2)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, fontsize=7)
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_ylim(0, 1.25 * tallest)  # room for the labels and the legend above the bars
        reference = chosen[0].reference
        axis.set_ylabel(f"time / {reference}")
        floor_note = "; black tick = memory-traffic floor" if any(f == f for f in floors) else ""
        if any(r.paired_low_pct == r.paired_low_pct for r in chosen if r.candidate != r.reference):
            floor_note += "; whisker = 95% interval of the paired ratio"
        axis.set_title(f"{group} ({mode}): median time relative to {reference}{floor_note}")
        axis.legend(fontsize=7, ncol=len(candidates), loc="upper right")
    figure.tight_layout()
    save_figure(figure, path)


def _case_label(row: BenchRow) -> str:
    return f"{row.case}\n{row.memory_format}\n{row.dtype}"  # one line each: neighbouring labels stay apart
