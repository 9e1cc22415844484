"""Retrofitting ECA into existing models: placement policies, surgery and the report.

Example:
    >>> import torch
    >>> from torch import nn
    >>> plain = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
    >>> report = add_eca(plain)
    >>> [(p.name, p.strategy) for p in report.places]
    [('1', 'norm fallback')]
    >>> remove_eca(plain)
    1
"""

from ecanet.retrofit.plan import plan_eca
from ecanet.retrofit.report import RetrofitPlace, RetrofitReport, SkippedPlace
from ecanet.retrofit.surgery import add_eca, remove_eca
from ecanet.retrofit.wrappers import ECAAfter, ECAInsteadOf

__all__ = [
    "ECAAfter",
    "ECAInsteadOf",
    "RetrofitPlace",
    "RetrofitReport",
    "SkippedPlace",
    "add_eca",
    "plan_eca",
    "remove_eca",
]
