import pytest

from ecanet.experiments.statistics import PairedDifference
from ecanet.explain import AttentionReport, LayerExplanation


def _change(mean, low, high):
    return PairedDifference(mean, 1.0, 20, low, high, 0.95)


@pytest.fixture
def hand_made_report() -> AttentionReport:
    """An ECA layer, a per-channel (ECA-NS) one, an SE layer and a CBAM layer (not frozen), with
    numbers easy to check by hand; the third class had no images."""
    nan = float("nan")
    eca = LayerExplanation(
        "layer1.0.eca", "ECA", 4, ((0.5, -2.0, 1.5),), 0.4, 0.1, 0.25,
        ((0.3, 0.4, 0.5, 0.6), (0.2, 0.3, 0.4, 0.5), (nan,) * 4), _change(-5.0, -9.0, -1.0), _change(0.2, 0.1, 0.3),
    )  # fmt: skip
    per_channel = LayerExplanation(
        "layer1.1.eca", "ECA", 2, ((0.0, 1.0, 0.0), (1.0, 1.0, 0.0)), 0.5, 0.2, 0.5,
        ((0.4, 0.6), (0.5, 0.5), (nan, nan)), _change(-0.5, -2.0, 1.0), _change(0.05, -0.01, 0.11),
    )  # fmt: skip
    se = LayerExplanation(
        "layer2.0.se", "SE", 2, (), 0.6, 0.05, 0.75,
        ((0.6, 0.6), (0.6, 0.6), (nan, nan)), _change(0.0, 0.0, 0.0), _change(0.0, -0.001, 0.001),
    )  # fmt: skip
    cbam = LayerExplanation("layer2.1.cbam", "CBAM", 2, (), 0.5, 0.0, 0.0, ((0.5, 0.5), (0.5, 0.5), (nan, nan)))
    return AttentionReport(
        "toy", ("a", "b", "c"), 20, 85.0, 0.5, (eca, per_channel, se, cbam), 0.05,
        _change(-10.0, -14.0, -6.0), _change(0.4, 0.3, 0.5),
    )  # fmt: skip
