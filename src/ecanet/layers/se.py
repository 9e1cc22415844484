"""Squeeze-and-Excitation (Hu et al., CVPR 2018): the paper's main comparison point for ECA."""

import torch
from torch import Tensor, fx, nn

from ecanet import functional as F_eca

__all__ = [
    "SE",
    "BottleneckExcitation",
    "bottleneck_mlp",
    "broadcast_channel_weights",
    "checked_descriptor",
    "rescale_channels",
]


class BottleneckExcitation(nn.Module):
    """Base of the layers with SE's bottleneck MLP, :class:`SE` and :class:`ecanet.layers.cbam.CBAM`:
    their ``fc1`` and ``fc2`` (:func:`bottleneck_mlp`) and the gate logits they compute.

    A method rather than a function taking the two layers, so that TorchScript compiles it (it
    cannot pass modules to functions).
    """

    def excitation(self, descriptor: Tensor) -> Tensor:
        """Gate logits ``fc2(relu(fc1(descriptor)))`` of a pooled ``(N, C)`` descriptor.

        Args:
            descriptor: ``(N, C)`` pooled values, cast to the layers' dtype.

        Shape:
            - Input: ``(N, C)``
            - Output: ``(N, C)``, in the dtype of the layers.

        Example:
            >>> SE(32).excitation(torch.randn(4, 32)).shape
            torch.Size([4, 32])
        """
        return self.fc2(torch.relu(self.fc1(descriptor.to(self.fc1.weight.dtype))))


class SE(BottleneckExcitation):
    """Squeeze-and-Excitation channel attention, for inputs of any dimensionality.

    ``out = x * sigmoid(fc2(relu(fc1(pool(x)))))``: a global average pool gives one value per
    channel, a bottleneck MLP (``C -> C / reduction -> C``) mixes all channels, and the gated result
    rescales every channel. The dimensionality reduction is what ECA's paper argues against.

    The two fully connected layers are ``nn.Linear`` modules named ``fc1`` and ``fc2`` (state-dict
    keys ``fc1.weight`` ``[hidden, C]`` and ``fc2.weight`` ``[C, hidden]``), since they act on the
    pooled ``(N, C)`` descriptor whatever the input's dimensionality. timm's and torchvision's SE
    hold the same weights as 1x1 convolutions (``[hidden, C, 1, 1]``); reshape to load those.

    They have no bias by default: the ECA paper's parameter counts for its SE and CBAM networks
    (26.77M for SE-ResNet-50, 3.40M for SE-MobileNetV2) are those of bias-free layers; ``bias=True``
    gives Hu et al.'s original layer.

    Args:
        channels: number of channels C.
        reduction: ratio of C to the hidden width; 16 in the ECA paper's ResNets, 8 in its
            MobileNetV2. Default: 16.
        min_channels: smallest hidden width. Default: 1 (the paper's ``C // reduction``).
        bias: whether ``fc1`` and ``fc2`` have a bias. Default: ``False``.
        channel_dim: ``1`` for ``(N, C, *spatial)``, ``-1`` for channels-last ``(N, *, C)``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(N, C, *)`` with at least one spatial dim, or ``(N, *, C)`` with ``channel_dim=-1``.
        - Output: same shape, dtype and memory format as the input.

    Attributes:
        hidden_channels: width of the bottleneck, ``max(min_channels, C // reduction)``.

    Example:
        >>> se = SE(256)
        >>> se
        SE(256, reduction=16, hidden=16)
        >>> se(torch.randn(2, 256, 7, 7)).shape
        torch.Size([2, 256, 7, 7])
        >>> sum(p.numel() for p in se.parameters())  # 2 * 256 * 16
        8192
        >>> SE(64, channel_dim=-1)(torch.randn(2, 49, 64)).shape  # tokens
        torch.Size([2, 49, 64])
    """

    channels: int
    reduction: int
    hidden_channels: int
    channel_dim: int

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        min_channels: int = 1,
        bias: bool = False,
        channel_dim: int = 1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if channel_dim not in (1, -1):
            raise ValueError(f"channel_dim must be 1 (N, C, *spatial) or -1 (N, *, C), got {channel_dim!r}")
        self.channels = channels
        self.reduction = reduction
        self.channel_dim = channel_dim
        self.fc1, self.fc2 = bottleneck_mlp(channels, reduction, min_channels, bias, device=device, dtype=dtype)
        self.hidden_channels = self.fc1.out_features

    def reset_parameters(self) -> None:
        """Re-initialises both layers as ``nn.Linear`` does."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        descriptor = checked_descriptor(x, self.channels, self.channel_dim, "SE")
        return rescale_channels(x, torch.sigmoid(self.excitation(descriptor)), self.channel_dim)

    def extra_repr(self) -> str:
        parts = [str(self.channels), f"reduction={self.reduction}", f"hidden={self.hidden_channels}"]
        if self.fc1.bias is not None:
            parts.append("bias=True")
        if self.channel_dim != 1:
            parts.append(f"channel_dim={self.channel_dim}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"{self._get_name()}({self.extra_repr()})"


# torch.fx records these two as single calls: they branch on the input's rank and shape, which a
# symbolic trace does not know. The MLP between them stays two module calls in a traced graph.
@fx.wrap
def checked_descriptor(x: Tensor, channels: int, channel_dim: int, layer: str) -> Tensor:
    """``x``'s average-pooled ``(N, C)`` descriptor (:func:`ecanet.functional.eca_descriptor`), after
    checking that ``x`` has the ``channels`` that ``layer`` (its name, for the error) was built for.

    Example:
        >>> checked_descriptor(torch.ones(2, 8, 5, 5), 8, 1, "SE").shape
        torch.Size([2, 8])
    """
    F_eca._check_input(x, channel_dim, layer)
    descriptor = F_eca.eca_descriptor(x, "avg", channel_dim)
    if descriptor.shape[1] != channels:
        raise ValueError(
            f"{layer} was built for {channels} channels but the input has {descriptor.shape[1]} "
            f"(channel_dim={channel_dim}, shape {list(x.shape)})"
        )
    return descriptor


@fx.wrap
def rescale_channels(x: Tensor, weights: Tensor, channel_dim: int) -> Tensor:
    """``x`` with each channel multiplied by its weight (cast to ``x``'s dtype).

    Args:
        x: input ``(N, C, *)`` (``channel_dim=1``) or ``(N, *, C)`` (``channel_dim=-1``).
        weights: ``(N, C)`` weights.
        channel_dim: ``1`` or ``-1``.

    Example:
        >>> rescale_channels(torch.ones(2, 49, 8), torch.full((2, 8), 0.5), -1).unique()
        tensor([0.5000])
    """
    return x * broadcast_channel_weights(weights.to(x.dtype), x.dim(), channel_dim)


def broadcast_channel_weights(weights: Tensor, ndim: int, channel_dim: int) -> Tensor:
    """Views ``(N, C)`` per-channel weights so that they broadcast against an ``ndim``-dim input.

    Args:
        weights: ``(N, C)`` weights.
        ndim: number of dims of the input to rescale.
        channel_dim: ``1`` (channels first) or ``-1`` (channels last).

    Shape:
        - Input: ``(N, C)``
        - Output: ``(N, C, 1, ..., 1)`` or ``(N, 1, ..., 1, C)`` with ``ndim`` dims.

    Example:
        >>> broadcast_channel_weights(torch.ones(2, 8), 4, -1).shape
        torch.Size([2, 1, 1, 8])
    """
    shape = [weights.shape[0]] + [1] * (ndim - 1)
    shape[1 if channel_dim == 1 else ndim - 1] = weights.shape[1]
    return weights.view(shape)


def bottleneck_mlp(
    channels: int,
    reduction: int,
    min_channels: int = 1,
    bias: bool = False,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[nn.Linear, nn.Linear]:
    """The two layers of SE's bottleneck MLP: ``C -> max(min_channels, C // reduction) -> C``.

    Shared by :class:`SE` and the channel branch of :class:`ecanet.layers.cbam.CBAM`.

    Args:
        channels: number of channels C (a positive int).
        reduction: ratio of C to the hidden width (a positive int).
        min_channels: smallest hidden width (a positive int).
        bias: whether both layers have a bias.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Returns:
        ``(fc1, fc2)``.

    Example:
        >>> fc1, fc2 = bottleneck_mlp(64, 16)
        >>> fc1.weight.shape, fc2.weight.shape
        (torch.Size([4, 64]), torch.Size([64, 4]))
    """
    for name, value in (("channels", channels), ("reduction", reduction), ("min_channels", min_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    hidden = max(min_channels, channels // reduction)
    fc1 = nn.Linear(channels, hidden, bias=bias, device=device, dtype=dtype)
    fc2 = nn.Linear(hidden, channels, bias=bias, device=device, dtype=dtype)
    return fc1, fc2
