import pytest
import torch
from torch import nn

from ecanet.modes import evaluation_mode


def test_every_modules_own_flag_comes_back_also_after_an_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.BatchNorm2d(4), nn.Dropout()), nn.BatchNorm2d(4))
    model[1][0].eval()
    model[2].eval()
    flags = [module.training for module in model.modules()]
    with pytest.raises(RuntimeError, match="inside"), evaluation_mode(model) as same:
        assert same is model and not any(module.training for module in model.modules())
        raise RuntimeError("inside")
    assert [module.training for module in model.modules()] == flags == [True, True, True, False, True, False]
    model.eval()
    with evaluation_mode(model):
        model(torch.randn(1, 3, 2, 2))
    assert not any(module.training for module in model.modules())
