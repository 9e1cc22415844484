"""What a variant costs: parameters, FLOPs, and inference and training-step time timed side by side.

Timing every variant in the same process, interleaved round after round, is what makes the times
comparable on a machine shared with other work; the per-epoch times of the training runs, which
ran one after another, are not.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ecanet.bench.timing import TimingStats, time_side_by_side

__all__ = ["ModelCost", "measure_costs"]


@dataclass(frozen=True)
class ModelCost:
    """Inference cost of one model.

    Attributes:
        params: number of parameters.
        flops: FLOPs of one forward pass of one image, as :func:`ecanet.profile_model` counts them.
        latency: time of one inference forward pass of a batch (see :func:`measure_costs`).
        train_step: time of one training step (forward, loss, backward, SGD update) on a batch.
    """

    params: int
    flops: int
    latency: TimingStats
    train_step: TimingStats


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward(model: nn.Module, batch: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode():
            output = model(batch)
        _synchronize(batch.device)
        return output

    return call


def _train_step(model: nn.Module, batch: torch.Tensor, targets: torch.Tensor) -> Callable[[], object]:
    # A copy, so that timing never changes the trained weights or BatchNorm statistics.
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def call() -> object:
        loss = nn.functional.cross_entropy(model(batch), targets)
        optimizer.zero_grad(set_to_none=True)
        with torch.autograd.set_multithreading_enabled(False):  # as ecanet.training.Trainer runs it
            loss.backward()
        optimizer.step()
        _synchronize(batch.device)
        return loss

    return call


def measure_costs(
    models: Mapping[str, nn.Module],
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    batch_size: int = 32,
    train_batch_size: int = 32,
    rounds: int = 15,
    warmup: int = 2,
) -> dict[str, ModelCost]:
    """Parameters, FLOPs, inference latency and training-step time of every model.

    Inference: eval mode under ``torch.inference_mode``. Training step: forward, cross-entropy,
    backward and an SGD update on a copy of the model in training mode. Both on the device the
    model's parameters are on, on the same random batch for every model, in alternating and
    rotating order round after round (:func:`ecanet.bench.timing.time_side_by_side`), so load on
    a shared machine affects all models alike. The models are left in eval mode, unchanged.

    Args:
        models: name -> classifier (at least one).
        image_shape: ``(C, H, W)`` of one input image.
        num_classes: number of classifier outputs (for the training step's random labels).
        batch_size: images per timed inference pass.
        train_batch_size: images per timed training step.
        rounds: measured rounds per model.
        warmup: unmeasured rounds first.

    Returns:
        name -> :class:`ModelCost`, in the order of ``models``.

    Shape:
        - Timed inputs: ``(batch_size, C, H, W)`` and ``(train_batch_size, C, H, W)``.

    Example:
        >>> def net(width):
        ...     return nn.Sequential(nn.Conv2d(1, width, 3), nn.Flatten(), nn.Linear(width * 36, 3))
        >>> costs = measure_costs({"small": net(4), "big": net(8)}, (1, 8, 8), 3, batch_size=2, rounds=3)
        >>> costs["small"].params, costs["big"].params, costs["small"].latency.rounds
        (475, 947, 3)
    """
    for name, value in (("batch_size", batch_size), ("train_batch_size", train_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)!r}")
    from ecanet import profile_model

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(max(batch_size, train_batch_size), *image_shape, generator=generator)
    targets = torch.randint(num_classes, (train_batch_size,), generator=generator)
    counts, inference, training = {}, {}, {}
    for name, model in models.items():
        model.eval()
        device = next(model.parameters()).device
        profile = profile_model(model, input_size=(1, *image_shape))
        counts[name] = (profile.params, profile.flops)
        inference[name] = _forward(model, images[:batch_size].to(device))
        training[name] = _train_step(model, images[:train_batch_size].to(device), targets.to(device))
    latency = time_side_by_side(inference, rounds=rounds, warmup=warmup)
    train_step = time_side_by_side(training, rounds=rounds, warmup=warmup)
    return {name: ModelCost(*counts[name], latency[name], train_step[name]) for name in models}
