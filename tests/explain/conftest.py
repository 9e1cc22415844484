import pytest

from ecanet.explain import AttentionReport, LayerExplanation


@pytest.fixture
def hand_made_report() -> AttentionReport:
    """An ECA layer, a per-channel (ECA-NS) one, an SE layer and a CBAM layer (not frozen), with
    numbers easy to check by hand; the third class had no images."""
    nan = float("nan")
    eca = LayerExplanation("layer1.0.eca", "ECA", 4, ((0.5, -2.0, 1.5),), 0.4, 0.1, 0.25,
                           ((0.3, 0.4, 0.5, 0.6), (0.2, 0.3, 0.4, 0.5), (nan,) * 4), 80.0, 0.7)  # fmt: skip
    per_channel = LayerExplanation("layer1.1.eca", "ECA", 2, ((0.0, 1.0, 0.0), (1.0, 1.0, 0.0)), 0.5, 0.2, 0.5,
                                   ((0.4, 0.6), (0.5, 0.5), (nan, nan)), 84.5, 0.55)  # fmt: skip
    se = LayerExplanation("layer2.0.se", "SE", 2, (), 0.6, 0.05, 0.75, ((0.6, 0.6), (0.6, 0.6), (nan, nan)), 85.0, 0.5)
    cbam = LayerExplanation("layer2.1.cbam", "CBAM", 2, (), 0.5, 0.0, 0.0, ((0.5, 0.5), (0.5, 0.5), (nan, nan)))
    return AttentionReport("toy", ("a", "b", "c"), 20, 85.0, 0.5, (eca, per_channel, se, cbam), 0.05, 75.0, 0.9)
