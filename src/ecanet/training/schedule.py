"""Learning-rate schedules, evaluated per optimiser step: linear warmup, then step decay or cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SCHEDULES", "LearningRateSchedule"]

SCHEDULES = ("step", "cosine")
# The paper divides the learning rate by 10 at epochs 30, 60 and 90 of 100.
STEP_MILESTONES = (0.3, 0.6, 0.9)
STEP_FACTOR = 0.1


@dataclass(frozen=True)
class LearningRateSchedule:
    """Multiplier of the base learning rate at each optimiser step (a ``LambdaLR`` function).

    Warmup ramps linearly from ``1/warmup_steps`` to 1. After it, ``"step"`` multiplies by 0.1 at
    the steps nearest 30%, 60% and 90% of the run (the paper's epochs 30/60/90 of 100; a run of 4
    epochs decays within epochs 2, 3 and 4), ``"cosine"`` decays to 0 along half a cosine over the
    remaining steps.

    Args:
        schedule: ``"step"`` or ``"cosine"``.
        epochs: total epochs.
        steps_per_epoch: optimiser steps per epoch.
        warmup_epochs: epochs of linear warmup (may be fractional).

    Example:
        >>> schedule = LearningRateSchedule("cosine", epochs=10, steps_per_epoch=100, warmup_epochs=1)
        >>> schedule(0), schedule(99), schedule(100), round(schedule(550), 3), schedule(1000)
        (0.01, 1.0, 1.0, 0.5, 0.0)
        >>> step = LearningRateSchedule("step", epochs=10, steps_per_epoch=100, warmup_epochs=0)
        >>> step(299), step(300), round(step(950), 6)
        (1.0, 0.1, 0.001)
    """

    schedule: str
    epochs: int
    steps_per_epoch: int
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    def __call__(self, step: int) -> float:
        warmup_steps = round(self.warmup_epochs * self.steps_per_epoch)
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if self.schedule == "step":  # at the step nearest each milestone: at whole epochs only, a short run lost decays
            total = self.epochs * self.steps_per_epoch
            passed = sum(step >= round(fraction * total) for fraction in STEP_MILESTONES)
            return STEP_FACTOR**passed
        decay_steps = max(1, self.epochs * self.steps_per_epoch - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
