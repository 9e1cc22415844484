"""RetrofitReport: totals and the printable table."""

from __future__ import annotations

from ecanet.retrofit import RetrofitPlace, RetrofitReport, SkippedPlace


def make_report(applied: bool = True) -> RetrofitReport:
    places = (
        RetrofitPlace("layer1.0.bn3", "insert", "family: torchvision ResNet", "BatchNorm2d", 256, 1, 5, 5),
        RetrofitPlace("features.1.block.1", "replace_se", "SE swap", "SqueezeExcitation", 16, 1, 3, 3, 264),
        RetrofitPlace("features.1.0.block.5", "insert", "family: torchvision ConvNeXt", "Linear", 96, -1, 3, 3),
    )
    skipped = (SkippedPlace("layer1.1.bn3", "8 channels < min_channels=16"),)
    return RetrofitReport(places, skipped, ("a note",), applied=applied)


def test_totals() -> None:
    report = make_report()
    assert (report.params_added, report.params_removed, report.param_delta) == (11, 264, -253)
    assert report.strategies == {"family: torchvision ResNet": 1, "SE swap": 1, "family: torchvision ConvNeXt": 1}
    assert len(report) == 3


def test_table_lists_every_place_with_its_strategy_and_cost() -> None:
    lines = str(make_report()).splitlines()
    assert lines[0].split() == ["place", "action", "strategy", "module", "channels", "k", "params"]
    assert lines[1].split() == [
        "layer1.0.bn3",
        "insert",
        "family:",
        "torchvision",
        "ResNet",
        "BatchNorm2d",
        "256",
        "5",
        "+5",
    ]
    assert lines[2].split()[-3:] == ["3", "+3", "-264"] and "swap SE" in lines[2]
    assert "96 (last)" in lines[3]
    # Columns line up: every row starts its "action" cell at the same offset.
    assert (
        len({line.index(word) for line, word in zip(lines[:4], ["action", "insert", "swap", "insert"], strict=True)})
        == 1
    )
    assert lines[4] == "3 ECA added (2 inserted, 1 SE swapped); parameters +11 (ECA) -264 (SE) = net -253"
    assert lines[5:] == ["skipped 1:", "  layer1.1.bn3  8 channels < min_channels=16", "note: a note"]


def test_plan_wording_and_hidden_skips() -> None:
    text = make_report(applied=False).table(skipped=False)
    assert "3 ECA planned" in text and "skipped" not in text


def test_empty_report() -> None:
    assert str(RetrofitReport((), (), (), applied=True)).splitlines()[0] == "no ECA placed"
