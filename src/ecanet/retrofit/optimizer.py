"""Keeping an existing optimizer in step with a retrofit: new ECA weights in, swapped-out SE weights out (and back)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["update_optimizer"]


def _group_of(optimizer: torch.optim.Optimizer, module: nn.Module) -> dict:
    """The param group holding ``module``'s parameters, else the first group."""
    ids = {id(p) for p in module.parameters()}
    for group in optimizer.param_groups:
        if any(id(p) in ids for p in group["params"]):
            return group
    return optimizer.param_groups[0]


def update_optimizer(
    optimizer: torch.optim.Optimizer,
    added: Sequence[tuple[nn.Parameter, nn.Module]],
    removed: Sequence[nn.Parameter],
) -> None:
    """Adds new parameters next to their neighbours' and drops removed ones with their state.

    Each new parameter joins the param group of its neighbouring module's weights (the module ECA
    follows, or the SE it replaces), so it trains with exactly their hyper-parameters (learning rate,
    weight decay, ...). Joining the existing group rather than opening a new one keeps learning-rate
    schedulers working: they hold one entry per group, fixed when they were built.

    Args:
        optimizer: the optimizer to update in place.
        added: ``(parameter, neighbour)`` pairs; the neighbour's parameters locate the group.
        removed: parameters that left the model.

    Example:
        >>> bn, new = nn.BatchNorm2d(4), nn.Parameter(torch.zeros(1, 1, 3))
        >>> sgd = torch.optim.SGD(bn.parameters(), lr=0.1)
        >>> update_optimizer(sgd, [(new, bn)], [])
        >>> len(sgd.param_groups[0]["params"])
        3
    """
    groups = [_group_of(optimizer, neighbour) for _, neighbour in added]
    removed_ids = {id(p) for p in removed}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in removed_ids]
    for param in removed:
        optimizer.state.pop(param, None)
    present = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for (param, _), group in zip(added, groups, strict=True):
        if id(param) not in present:
            group["params"].append(param)
            present.add(id(param))
