"""A tiny ECA network without BatchNorm for training tests.

Without BatchNorm a data-parallel run computes exactly what a single process computes with the
same global batch, so the two can be compared tightly. Importable as ``tiny_model:build`` when
this directory is on the path (tests/training/conftest.py puts it there; subprocesses get it via
PYTHONPATH).
"""

import torch
from torch import nn

from ecanet import ECA

SPEC = "tiny_model:build"


def build(num_classes: int, in_chans: int, width: int = 8) -> nn.Module:
    """Two strided convolutions with ECA, pooling to 4x4 and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3, stride=2, padding=1),
        nn.ReLU(),
        ECA(width, kernel_size=3),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        ECA(2 * width, kernel_size=3),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(2 * width * 16, num_classes),
    )


BACKWARD_THREADING: list[bool] = []
"""What :func:`build_recording`'s model saw during each backward: whether multithreaded autograd was on."""


def build_recording(num_classes: int, in_chans: int) -> nn.Module:
    """:func:`build`, with a hook that appends to :data:`BACKWARD_THREADING` in every backward."""
    model = build(num_classes, in_chans)
    model[-1].weight.register_hook(lambda grad: BACKWARD_THREADING.append(torch._C._is_multithreading_enabled()))
    return model
