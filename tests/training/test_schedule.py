import math

import pytest

from ecanet.training.schedule import LearningRateSchedule


def reference_factor(schedule: str, step: int, epochs: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """The schedule written out directly: linear warmup, then x0.1 at 30/60/90% of the steps or half a cosine."""
    warmup = round(warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "step":
        drops = sum(step >= round(epochs * steps_per_epoch * fraction) for fraction in (0.3, 0.6, 0.9))
        return 0.1**drops
    total = epochs * steps_per_epoch - warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / total)))


@pytest.mark.parametrize("schedule", ["step", "cosine"])
@pytest.mark.parametrize(("epochs", "steps_per_epoch", "warmup_epochs"), [(10, 7, 0), (100, 3, 5), (4, 25, 0.5)])
def test_every_step_matches_the_written_out_schedule(
    schedule: str, epochs: int, steps_per_epoch: int, warmup_epochs: float
) -> None:
    function = LearningRateSchedule(schedule, epochs, steps_per_epoch, warmup_epochs)
    for step in range(epochs * steps_per_epoch):
        assert function(step) == pytest.approx(reference_factor(schedule, step, epochs, steps_per_epoch, warmup_epochs))


@pytest.mark.parametrize(("epochs", "steps_per_epoch"), [(1, 10), (2, 5), (4, 25), (5, 3), (7, 11)])
def test_a_short_run_gets_all_three_decays(epochs: int, steps_per_epoch: int) -> None:
    # At whole epochs, rounding put 4 epochs' last decay at epoch 4, after the run.
    function = LearningRateSchedule("step", epochs, steps_per_epoch)
    factors = [function(step) for step in range(epochs * steps_per_epoch)]
    assert factors[0] == 1 and factors[-1] == pytest.approx(0.001)
    drops = [step for step in range(1, len(factors)) if factors[step] < factors[step - 1]]
    assert len(drops) == 3 and all(
        abs(d / len(factors) - f) <= 0.5 / len(factors) for d, f in zip(drops, (0.3, 0.6, 0.9), strict=True)
    )


def test_paper_recipe_drops_at_epochs_30_60_90() -> None:
    function = LearningRateSchedule("step", epochs=100, steps_per_epoch=1)
    factors = {epoch: function(epoch) for epoch in (0, 29, 30, 59, 60, 89, 90, 99)}
    assert factors == pytest.approx({0: 1, 29: 1, 30: 0.1, 59: 0.1, 60: 0.01, 89: 0.01, 90: 0.001, 99: 0.001})


def test_warmup_ramps_linearly_to_one() -> None:
    function = LearningRateSchedule("cosine", epochs=10, steps_per_epoch=10, warmup_epochs=1)
    assert [function(step) for step in range(10)] == pytest.approx([(step + 1) / 10 for step in range(10)])


def test_unknown_schedule_is_named() -> None:
    with pytest.raises(ValueError, match=r"schedule must be one of \('step', 'cosine'\), got 'linear'"):
        LearningRateSchedule("linear", epochs=1, steps_per_epoch=1)
