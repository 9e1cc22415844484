"""update_optimizer: new weights join their neighbour's group, removed weights leave with their state."""

from __future__ import annotations

import torch
from torch import nn

from ecanet.retrofit.optimizer import update_optimizer


def test_new_parameter_joins_the_neighbours_group_and_is_trained() -> None:
    conv, bn = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
    sgd = torch.optim.SGD([{"params": conv.parameters()}, {"params": bn.parameters(), "lr": 0.5}], lr=0.1)
    new = nn.Parameter(torch.zeros(1, 1, 3))
    update_optimizer(sgd, [(new, bn)], [])
    assert any(p is new for p in sgd.param_groups[1]["params"]) and len(sgd.param_groups) == 2
    new.grad = torch.ones_like(new)
    sgd.step()
    torch.testing.assert_close(new.detach(), torch.full((1, 1, 3), -0.5))


def test_unknown_neighbour_uses_the_first_group_and_duplicates_are_ignored() -> None:
    conv = nn.Conv2d(3, 8, 1)
    sgd = torch.optim.SGD(conv.parameters(), lr=0.1)
    new = nn.Parameter(torch.zeros(3))
    update_optimizer(sgd, [(new, nn.Identity()), (new, nn.Identity())], [])
    assert sum(p is new for p in sgd.param_groups[0]["params"]) == 1


def test_removed_parameters_leave_groups_and_state() -> None:
    keep, drop = nn.Linear(4, 4), nn.Linear(4, 2)
    adam = torch.optim.Adam([*keep.parameters(), *drop.parameters()], lr=1e-3)
    (keep(torch.ones(1, 4)).sum() + drop(torch.ones(1, 4)).sum()).backward()
    adam.step()
    new = nn.Parameter(torch.zeros(3))
    update_optimizer(adam, [(new, drop)], list(drop.parameters()))
    listed = adam.param_groups[0]["params"]
    assert [id(p) for p in listed] == [id(p) for p in (*keep.parameters(), new)]
    assert all(p not in adam.state for p in drop.parameters()) and all(p in adam.state for p in keep.parameters())
