import csv
import math

import pytest

from ecanet.bench.report import BenchRow, format_table, plot_rows, write_csv


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
    rows = [_row(), _row("timm", 4.0), _row("none", 3.0, "none", 3.0, group="tail", mode="training")]
    plot_rows(rows, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
