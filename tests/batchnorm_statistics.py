"""BatchNorms with statistics worth testing against: freshly built ones normalise with mean 0 and
variance 1 and have an identity affine, under which folding them away is indistinguishable from
forgetting them."""

from __future__ import annotations

import torch
from torch import nn


def with_random_statistics(model: nn.Module) -> nn.Module:
    """Gives every ``nn.BatchNorm2d`` in ``model`` (``model`` itself included) random running means,
    running variances in [0.5, 2], and a random weight and bias; returns ``model``."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    return model
