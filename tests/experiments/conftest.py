from pathlib import Path

import pytest

from ecanet.bench.timing import TimingStats
from ecanet.experiments.results import CompareResult, EcaLayer, VariantResult


def _history(top1s, top5s, epoch_seconds):
    return [
        {"epoch": epoch, "val_top1": top1, "val_top5": top5, "epoch_seconds": seconds}
        for epoch, (top1, top5, seconds) in enumerate(zip(top1s, top5s, epoch_seconds, strict=True), 1)
    ]


@pytest.fixture
def hand_made_result(tmp_path: Path) -> CompareResult:
    """Two seeds, three variants, numbers chosen so every summary value is easy to compute by hand."""
    none = VariantResult(
        "none",
        (0, 1),
        (_history([60.0, 80.0], [95.0, 98.0], [10.0, 12.0]), _history([62.0, 84.0], [96.0, 99.0], [11.0, 13.0])),
        params=1000,
        flops=2_000_000,
        latency=TimingStats(0.010, 0.009, 0.012, 15),
        latency_batch_size=32,
        train_step=TimingStats(0.100, 0.090, 0.110, 15),
        train_batch_size=64,
        eca_layers=(),
    )
    eca = VariantResult(
        "eca",
        (0, 1),
        (_history([61.0, 81.0], [95.5, 98.5], [11.0, 13.0]), _history([63.0, 86.0], [96.5, 99.5], [12.0, 14.0])),
        params=1012,
        flops=2_000_100,
        latency=TimingStats(0.011, 0.010, 0.013, 15),
        latency_batch_size=32,
        train_step=TimingStats(0.105, 0.090, 0.110, 15),
        train_batch_size=64,
        eca_layers=(EcaLayer("layer1.0.eca", 16, 3), EcaLayer("layer2.0.eca", 32, 3), EcaLayer("layer4.0.eca", 128, 5)),
    )
    se = VariantResult(
        "se",
        (0, 1),
        (_history([59.0, 79.0], [94.0, 97.0], [12.0, 12.0]), _history([61.0, 83.0], [95.0, 98.0], [12.0, 12.0])),
        params=1500,
        flops=2_001_000,
        latency=TimingStats(0.0125, 0.012, 0.013, 15),
        latency_batch_size=32,
        train_step=TimingStats(0.100, 0.090, 0.110, 15),
        train_batch_size=64,
        eca_layers=(),
    )
    return CompareResult(
        tmp_path, "resnet18", "fashion-mnist", 10, (1, 1, 28, 28), 2, 0.95, (none, eca, se), {"lr": 0.1}
    )
