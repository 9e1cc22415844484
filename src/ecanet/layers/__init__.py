"""Attention modules, each a thin shell around a function of :mod:`ecanet.functional`."""

from ecanet.layers.cbam import CBAM
from ecanet.layers.eca import ECA, ChannelKernel
from ecanet.layers.factory import create_attention
from ecanet.layers.se import SE

__all__ = ["CBAM", "ECA", "SE", "ChannelKernel", "create_attention"]
