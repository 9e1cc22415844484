"""Attention modules, each a thin shell around a function of :mod:`ecanet.functional`."""

from ecanet.layers.eca import ECA, ChannelKernel
from ecanet.layers.se import SE

__all__ = ["ECA", "SE", "ChannelKernel"]
