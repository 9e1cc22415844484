"""Explaining attention: what each ECA, SE and CBAM layer of a trained network does on labelled data.

Example:
    >>> from ecanet.explain import explain_attention, plot_attention
"""

from ecanet.explain.attention import explain_attention
from ecanet.explain.fixed_gates import fixed_gates
from ecanet.explain.gates import attention_layers, channel_gate, gate_from_output
from ecanet.explain.plots import plot_attention, plot_gates_by_class
from ecanet.explain.report import AttentionReport, LayerExplanation
from ecanet.explain.statistics import GateStatistics

__all__ = [
    "AttentionReport",
    "GateStatistics",
    "LayerExplanation",
    "attention_layers",
    "channel_gate",
    "explain_attention",
    "fixed_gates",
    "gate_from_output",
    "plot_attention",
    "plot_gates_by_class",
]
