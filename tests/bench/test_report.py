import csv
import dataclasses
import math

import pytest

from ecanet.bench.report import BenchRow, format_table, plot_rows, rows_from_stats, write_csv
from ecanet.bench.timing import TimingStats


def _row(
    candidate="ecanet", median=2.0, reference="timm", reference_ms=4.0, floor=1.0, group="layer", mode="inference"
):
    return BenchRow(group, "2x8x4x4", "nchw", "float32", mode, candidate, median, median * 0.9, median * 1.1, 5,
                    reference, reference_ms, floor)  # fmt: skip


def test_derived_columns():
    row = _row(median=2.0, reference_ms=4.0, floor=1.6)
    assert row.speedup == pytest.approx(2.0)
    assert row.overhead_pct == pytest.approx(-50.0)
    assert row.floor_pct == pytest.approx(125.0)


def test_table_has_one_line_per_row_and_leaves_missing_floors_blank():
    rows = [_row(), _row("resnet50", 10.0, "resnet50", 10.0, math.nan, group="model")]
    lines = format_table(rows).splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "group"
    assert lines[1].rstrip().endswith("200%")
    assert lines[2].split()[-2:] == ["+0.0%", "+0"]  # overhead and extra_us, no floor


def _timing(samples: list[float]) -> TimingStats:
    ordered = sorted(samples)
    return TimingStats(ordered[len(ordered) // 2], ordered[3], ordered[-4], len(samples), tuple(samples))


def test_rows_carry_the_paired_overheads_interval_into_the_table():
    reference = [1.0 + 0.1 * (i % 4) for i in range(15)]
    ratios = [0.97, 0.98, 0.99, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.07, 1.08, 1.09, 1.12, 1.15, 1.4]
    stats = {"none": _timing(reference), "eca": _timing([r * t for r, t in zip(ratios, reference, strict=True)])}
    none, eca = rows_from_stats("model", "m", "nchw", "float32", "training", stats, "none")
    assert (none.paired_low_pct, none.paired_overhead_pct, none.paired_high_pct) == (0.0, 0.0, 0.0)
    assert eca.paired_overhead_pct == pytest.approx(5.0)
    assert (eca.paired_low_pct, eca.paired_high_pct) == (pytest.approx(1.0), pytest.approx(9.0))
    assert "+1.0..+9.0%" in format_table([none, eca]).splitlines()[2]
    few = rows_from_stats("model", "m", "nchw", "float32", "training", {"none": _timing([1.0] * 5)}, "none")
    assert math.isnan(few[0].paired_low_pct) and math.isnan(few[0].paired_high_pct)


def test_csv_round_trips_the_numbers(tmp_path):
    rows = [_row(median=2.5), _row("timm", 4.0)]
    write_csv(rows, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as file:
        records = list(csv.DictReader(file))
    assert [r["candidate"] for r in records] == ["ecanet", "timm"]
    assert float(records[0]["median_ms"]) == 2.5
    assert float(records[0]["speedup"]) == pytest.approx(1.6)
    assert float(records[1]["overhead_pct"]) == pytest.approx(0.0)
    assert float(records[0]["extra_us"]) == pytest.approx(-1500.0)


def test_plot_writes_a_png(tmp_path):
    with_interval = dataclasses.replace(_row(), paired_overhead_pct=-49.0, paired_low_pct=-52.0, paired_high_pct=-45.0)
    rows = [with_interval, _row("timm", 4.0), _row("none", 3.0, "none", 3.0, group="tail", mode="training")]
    plot_rows(rows, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
