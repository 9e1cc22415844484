import csv
import math

import pytest

from ecanet.experiments.report import CSV_COLUMNS, format_table, summary_rows, write_csv, write_markdown


def test_summary_rows_by_hand(hand_made_result):
    none, eca, se = summary_rows(hand_made_result)
    assert [row["attention"] for row in (none, eca, se)] == ["none", "eca", "se"]
    assert (none["params_delta"], eca["params_delta"], se["params_delta"]) == (0, 12, 500)
    assert eca["flops_delta"] == 100
    # final top-1: none 80, 84 -> mean 82, std sqrt(8) ; eca 81, 86 -> 83.5, std sqrt(12.5)
    assert none["top1_mean"] == pytest.approx(82.0) and none["top1_std"] == pytest.approx(math.sqrt(8.0))
    assert eca["top1_mean"] == pytest.approx(83.5) and eca["top1_std"] == pytest.approx(math.sqrt(12.5))
    assert eca["top5_mean"] == pytest.approx(99.0)
    # eca - none per seed: 1, 2 -> mean 1.5, std sqrt(0.5), se 0.5; t_{0.975,1} = tan(0.475 pi)
    half_width = math.tan(0.475 * math.pi) * 0.5
    assert eca["top1_delta"] == pytest.approx(1.5)
    assert eca["top1_delta_low"] == pytest.approx(1.5 - half_width)
    assert eca["top1_delta_high"] == pytest.approx(1.5 + half_width)
    # se - none: -1, -1 -> no spread, the interval is the point
    assert se["top1_delta_low"] == pytest.approx(-1.0) and se["top1_delta_high"] == pytest.approx(-1.0)
    assert none["top1_delta"] == 0.0
    # latency 10 ms vs 11 ms: +10 %; throughput 32 / 0.011
    assert eca["latency_ms"] == pytest.approx(11.0) and eca["latency_change_pct"] == pytest.approx(10.0)
    assert eca["throughput_images_per_s"] == pytest.approx(32 / 0.011)
    # training step 100 ms vs 105 ms: +5 %
    assert eca["train_step_ms"] == pytest.approx(105.0) and eca["train_step_change_pct"] == pytest.approx(5.0)
    assert eca["train_batch_size"] == 64
    # median epoch time: none {10, 12, 11, 13} -> 11.5 ; eca {11, 13, 12, 14} -> 12.5
    assert none["epoch_seconds"] == pytest.approx(11.5) and eca["epoch_seconds"] == pytest.approx(12.5)
    assert eca["epoch_seconds_change_pct"] == pytest.approx((12.5 / 11.5 - 1) * 100)
    assert set(none) == set(CSV_COLUMNS)


def test_no_top5_for_few_classes(hand_made_result):
    from dataclasses import replace

    rows = summary_rows(replace(hand_made_result, num_classes=5))
    assert all(row["top5_mean"] is None for row in rows)
    assert "top-5" not in format_table(rows)


def test_mismatched_seeds_are_refused(hand_made_result):
    from dataclasses import replace

    eca = replace(hand_made_result.variants[1], seeds=(0, 7))
    with pytest.raises(ValueError, match="same seeds"):
        summary_rows(replace(hand_made_result, variants=(hand_made_result.variants[0], eca)))


def test_terminal_and_markdown_tables(hand_made_result):
    rows = summary_rows(hand_made_result)
    text = format_table(rows).splitlines()
    assert len(text) == 4
    assert text[0].split()[:2] == ["attention", "params"]
    assert text[1].startswith("none") and "baseline" in text[1]
    assert "+12" in text[2] and "83.50 ± 3.54" in text[2] and "+1.50 [" in text[2] and "(+10.0%)" in text[2]
    assert "105.00 (+5.0%)" in text[2] and "train ms/step (batch 64)" in text[0]
    markdown = format_table(rows, markdown=True).splitlines()
    assert markdown[0].startswith("| attention |") and set(markdown[1]) <= {"|", " ", "-"}
    assert all(line.count("|") == markdown[0].count("|") for line in markdown)


def test_timing_changes_pair_the_rounds_when_they_were_kept(hand_made_result):
    from dataclasses import replace

    from ecanet.bench.timing import TimingStats

    # The machine slows whole rounds down (x1 or x3); eca's rounds run 4-16% over the baseline's.
    slowdown = [1.0, 3.0, 1.0, 3.0, 1.0, 1.0, 3.0, 1.0, 1.0, 3.0, 1.0, 1.0, 3.0, 1.0, 1.0]
    ratios = [1.04, 1.05, 1.06, 1.07, 1.08, 1.09, 1.10, 1.11, 1.12, 1.13, 1.14, 1.15, 1.16, 1.30, 1.50]

    def timing(samples: list[float]) -> TimingStats:
        ordered = sorted(samples)
        return TimingStats(ordered[7], ordered[3], ordered[11], 15, tuple(samples))

    baseline_rounds = [0.01 * s for s in slowdown]
    none, eca, se = hand_made_result.variants
    none = replace(none, latency=timing(baseline_rounds), train_step=timing([10 * t for t in baseline_rounds]))
    eca_rounds = [t * r for t, r in zip(baseline_rounds, ratios, strict=True)]
    eca = replace(eca, latency=timing(eca_rounds), train_step=timing([10 * t for t in eca_rounds]))
    rows = summary_rows(replace(hand_made_result, variants=(none, eca, se)))
    for key in ("latency_change", "train_step_change"):
        # Median ratio 1.11; 15 rounds at 95%: the 4th smallest and the 4th largest ratio.
        assert rows[1][f"{key}_pct"] == pytest.approx(11.0)
        assert rows[1][f"{key}_low_pct"] == pytest.approx(7.0) and rows[1][f"{key}_high_pct"] == pytest.approx(15.0)
        assert rows[0][f"{key}_low_pct"] == rows[0][f"{key}_high_pct"] == pytest.approx(0.0)
    assert rows[2]["latency_change_low_pct"] is None  # se kept no rounds: the medians' ratio alone
    assert rows[2]["latency_change_pct"] == pytest.approx((se.latency.median_s / none.latency.median_s - 1) * 100)
    assert "(+11.0% [+7.0, +15.0])" in format_table(rows).splitlines()[2]
    # Five rounds pair up but cannot reach 95%: the paired median, no interval.
    none5 = replace(none, latency=TimingStats(0.01, 0.01, 0.03, 5, tuple(baseline_rounds[:5])))
    eca5 = replace(eca, latency=TimingStats(0.011, 0.01, 0.012, 5, tuple(eca_rounds[:5])))
    short = summary_rows(replace(hand_made_result, variants=(none5, eca5, se)))[1]
    assert short["latency_change_pct"] == pytest.approx(6.0)  # median of 1.04, 1.05, 1.06, 1.07, 1.08
    assert short["latency_change_low_pct"] is None and short["latency_change_high_pct"] is None


def test_single_seed_says_no_interval(hand_made_result):
    from dataclasses import replace

    variants = tuple(replace(v, seeds=(0,), histories=v.histories[:1]) for v in hand_made_result.variants)
    rows = summary_rows(replace(hand_made_result, variants=variants))
    assert rows[1]["top1_delta_low"] is None and rows[1]["top1_std"] is None
    assert "1 seed: no CI" in format_table(rows)


def test_csv_round_trip(hand_made_result, tmp_path):
    rows = summary_rows(hand_made_result)
    path = write_csv(tmp_path / "results.csv", rows)
    with path.open() as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        read = list(reader)
    assert [r["attention"] for r in read] == ["none", "eca", "se"]
    assert float(read[1]["top1_delta"]) == pytest.approx(1.5)
    assert int(read[2]["params"]) == 1500
    assert not list(tmp_path.glob(".*.tmp"))


def test_markdown_report(hand_made_result, tmp_path):
    rows = summary_rows(hand_made_result)
    path = write_markdown(tmp_path / "report.md", hand_made_result, rows, ["curves.png"], command="ecanet compare")
    text = path.read_text()
    assert text.startswith("# Does ECA help resnet18 on fashion-mnist?")
    assert "paired t interval" in text and "t(n - 1 = 1 degree of freedom)" in text
    assert "(2 seeds: 0, 1; 2 epochs each), input (1, 28, 28), 10 classes." in text
    assert "| eca | 81.00 | 86.00 |" in text
    assert "ECA kernel sizes of `eca` (3 layers): 3, 3, 5." in text
    assert "![curves](curves.png)" in text and "ecanet compare" in text
