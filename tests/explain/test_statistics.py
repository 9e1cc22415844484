import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ecanet.explain import GateStatistics


def _reference(gates: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """The statistics from the whole (N, C) matrix at once, channel by channel, leaving out NaN gates."""
    channels = gates.shape[1]
    class_means = np.full((num_classes, channels), np.nan)
    means = np.full(channels, np.nan)
    total, between, known = np.zeros(channels), np.zeros(channels), np.zeros(channels)
    for c in range(channels):
        column, column_labels = gates[:, c], labels
        keep = ~np.isnan(column)
        column, column_labels = column[keep], column_labels[keep]
        known[c] = len(column)
        if not len(column):
            continue
        means[c] = column.mean()
        total[c] = column.var() * len(column)
        within = 0.0
        for k in range(num_classes):
            members = column[column_labels == k]
            if len(members):
                class_means[k, c] = members.mean()
                within += members.var() * len(members)
        between[c] = total[c] - within
    present = len(set(labels.tolist()))
    return {
        "mean": means,
        "class_means": class_means,
        "spread": np.sqrt(total.sum() / known.sum()) if known.sum() else 0.0,  # no gate known: no spread
        "class_share": between.sum() / total.sum() if total.sum() > 0 else 0.0,
        "chance": (present - 1) / (len(gates) - 1),
    }


@settings(max_examples=40, deadline=None)
@given(
    images=st.integers(2, 60),
    channels=st.integers(1, 9),
    num_classes=st.integers(1, 6),
    batch_size=st.integers(1, 17),
    unknown=st.sampled_from([0.0, 0.2]),
    seed=st.integers(0, 2**16),
)
@example(images=2, channels=2, num_classes=2, batch_size=1, unknown=0.2, seed=1397)  # no gate known at all
def test_batched_statistics_match_the_whole_matrix(images, channels, num_classes, batch_size, unknown, seed):
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, num_classes, images)
    # Gates that depend partly on the class, so the class share is neither 0 nor 1; some unknown.
    gates = 1 / (1 + np.exp(-(generator.normal(size=(images, channels)) + labels[:, None] * 0.7)))
    gates = gates.astype(np.float32).astype(np.float64)
    gates[generator.random((images, channels)) < unknown] = np.nan
    gates[:, 0] = np.nan if unknown and channels > 1 else gates[:, 0]  # a channel never known
    stats = GateStatistics(channels, num_classes)
    for start in range(0, images, batch_size):
        stop = start + batch_size
        stats.update(torch.from_numpy(gates[start:stop]).float(), torch.from_numpy(labels[start:stop]))
    expected = _reference(gates, labels, num_classes)
    assert stats.count == images
    np.testing.assert_allclose(stats.mean.numpy(), expected["mean"], rtol=1e-10)
    np.testing.assert_allclose(stats.class_means.numpy(), expected["class_means"], rtol=1e-10)
    assert stats.spread == pytest.approx(expected["spread"], rel=1e-6, abs=1e-12)
    assert stats.class_share == pytest.approx(expected["class_share"], rel=1e-6, abs=1e-9)
    assert stats.chance_class_share == pytest.approx(expected["chance"])


def test_gates_that_ignore_the_input_have_no_spread_and_no_class_share():
    stats = GateStatistics(3, 2)
    stats.update(torch.full((5, 3), 0.25), torch.tensor([0, 1, 1, 0, 1]))
    assert stats.spread == 0.0 and stats.class_share == 0.0
    torch.testing.assert_close(stats.class_means, torch.full((2, 3), 0.25, dtype=torch.float64))


def test_gates_set_by_the_class_alone_have_a_class_share_of_one():
    stats = GateStatistics(2, 3)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    stats.update(torch.stack([labels * 0.3, 1 - labels * 0.2], 1), labels)
    assert stats.class_share == pytest.approx(1.0)


def test_a_class_without_images_has_no_mean():
    stats = GateStatistics(2, 3)
    stats.update(torch.rand(4, 2), torch.tensor([0, 2, 0, 2]))
    assert torch.isnan(stats.class_means[1]).all() and not torch.isnan(stats.class_means[[0, 2]]).any()
    assert stats.chance_class_share == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("gates", "labels", "message"),
    [
        (torch.rand(4, 3), torch.zeros(4, dtype=torch.long), r"gates must have shape \(N, 2\)"),
        (torch.rand(4, 2), torch.zeros(3, dtype=torch.long), r"labels must have shape \(4,\)"),
        (torch.rand(2, 2), torch.tensor([0, 5]), r"labels must lie in 0 .. 2"),
        (torch.rand(2, 2), torch.tensor([-1, 0]), r"labels must lie in 0 .. 2"),
    ],
)
def test_bad_batches_are_refused(gates, labels, message):
    with pytest.raises(ValueError, match=message):
        GateStatistics(2, 3).update(gates, labels)
