"""Attention modules, each a thin shell around a function of :mod:`ecanet.functional`."""

from ecanet.layers.eca import ECA, ChannelKernel

__all__ = ["ECA", "ChannelKernel"]
