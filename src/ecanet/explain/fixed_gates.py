"""Attention layers run with a fixed gate in place of the one they compute from their input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from torch import Tensor, nn

from ecanet.explain.gates import gate_replaceable
from ecanet.layers.se import rescale_channels

__all__ = ["fixed_gates"]


@contextlib.contextmanager
def fixed_gates(gates: Mapping[nn.Module, Tensor]) -> Iterator[None]:
    """Within the block, every layer of ``gates`` multiplies its input by the given per-channel gate,
    the same for every image, instead of the gate it computes.

    Freezing a layer's gate at its mean over a dataset removes what attention adds beyond a fixed
    rescaling: the change in accuracy measures how much the network uses the layer's dependence
    on the input. Works through ECA's fused block tails (they run the layer as a module while it
    has hooks) and with in-place layers (the input is copied before they overwrite it).

    Args:
        gates: layer to ``(C,)`` gate; any layer whose output is its input times a gate per channel
            (channels first unless the layer's ``channel_dim`` is -1), not CBAM.

    Example:
        >>> import torch
        >>> from ecanet import ECA
        >>> layer, x = ECA(4), torch.randn(2, 4, 3, 3)
        >>> with fixed_gates({layer: torch.full((4,), 0.5)}):
        ...     torch.equal(layer(x), 0.5 * x)
        True
    """
    handles = []
    try:
        for layer, gate in gates.items():
            if not gate_replaceable(layer):
                raise ValueError(
                    f"{type(layer).__name__} cannot run with a fixed gate: a spatial gate follows its channel gate"
                )
            channels = getattr(layer, "channels", None)
            if gate.dim() != 1 or (channels is not None and gate.shape[0] != channels):
                raise ValueError(f"a fixed gate must have shape ({channels or 'C'},), got {list(gate.shape)}")
            inputs: list[Tensor] = []
            handles.append(layer.register_forward_pre_hook(_input_keeper(inputs)))
            handles.append(layer.register_forward_hook(_output_replacer(inputs, gate)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _input_keeper(inputs: list[Tensor]) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
    """A forward pre-hook that keeps the layer's input (a copy, if the layer will overwrite it)."""

    def keep(layer: nn.Module, args: tuple[Tensor, ...]) -> None:
        inputs.append(args[0].clone() if getattr(layer, "inplace", False) else args[0])

    return keep


def _output_replacer(inputs: list[Tensor], gate: Tensor) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], Tensor]:
    """A forward hook that returns the kept input times ``gate`` in place of the layer's output."""

    def replace(layer: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        x = inputs.pop()
        weights = gate.to(x.device).expand(x.shape[0], -1)
        return rescale_channels(x, weights, getattr(layer, "channel_dim", 1))

    return replace
