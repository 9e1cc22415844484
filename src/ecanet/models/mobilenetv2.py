"""MobileNetV2 with pluggable channel attention, in torchvision's layout and parameter names.

The attention module is the last element of every inverted-residual block's ``conv`` sequence
(after the linear 1x1 projection and its BatchNorm), in all 17 blocks, as in the ECA paper; the
authors' checkpoint keys are therefore ``features.1.conv.3.conv.weight`` and
``features.{2..17}.conv.4.conv.weight``.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn

from ecanet.layers.eca import ECA, has_forward_hooks
from ecanet.layers.factory import AttentionSpec, create_attention, names_eca
from ecanet.layers.se import SE

__all__ = [
    "INVERTED_RESIDUAL_SETTING",
    "InvertedResidual",
    "MobileNetV2",
    "eca_mobilenet_v2",
    "make_divisible",
    "mobilenet_v2",
    "official_mobilenet_kernel_sizes",
    "se_mobilenet_v2",
]

# (expansion t, output channels c, repeats n, first stride s) of each stage, as in the paper.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
NUM_BLOCKS = sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds ``value`` to the nearest multiple of ``divisor``, never more than 10% below it (torchvision's rule).

    Args:
        value: channel count before rounding.
        divisor: the multiple to round to.

    Example:
        >>> make_divisible(32 * 0.5), make_divisible(24 * 0.35)
        (16, 8)
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn_relu6(inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: keys ``0.weight`` (conv) and ``1.*`` (BatchNorm)."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, attention, (+ input).

    Args:
        inp: input channels.
        oup: output channels.
        stride: stride of the depthwise convolution (1 or 2).
        expand_ratio: hidden width = ``round(inp * expand_ratio)``; 1 drops the expansion.
        attention: attention spec for :func:`ecanet.layers.factory.create_attention` (on ``oup`` channels).

    Shape:
        - Input: ``(N, inp, H, W)``
        - Output: ``(N, oup, H / stride, W / stride)``

    Example:
        >>> import torch
        >>> block = InvertedResidual(16, 16, 1, 6, attention="eca")
        >>> block(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, attention: AttentionSpec = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel_size=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        module = create_attention(attention, oup)
        if module is not None:
            layers.append(module)
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self.stride = stride

    @property
    def eca(self) -> ECA | None:
        """The block's ECA module (the last element of ``conv``), or ``None``."""
        last = self.conv[-1]
        return last if isinstance(last, ECA) else None

    def forward(self, x: Tensor) -> Tensor:
        eca = self.eca
        if eca is None or has_forward_hooks(self.conv):  # hooks on the sequence see it run as one
            return x + self.conv(x) if self.use_res_connect else self.conv(x)
        branch = x
        for layer in self.conv[:-2]:  # the modules themselves, so torch.fx sees them
            branch = layer(branch)
        # ECA takes the projection's BatchNorm (on a GPU at inference it runs inside the rescale,
        # writing into the projection's output unless a hook on the projection may have kept it).
        if self.use_res_connect:
            inplace = not has_forward_hooks(self.conv[-3])
            return eca.residual_after_norm(branch, self.conv[-2], x, activation="none", inplace=inplace)
        return eca.after_norm(branch, self.conv[-2])


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018) with optional attention in every block (torchvision names).

    Args:
        num_classes: outputs of the classifier. Default: 1000.
        in_chans: input channels. Default: 3.
        width_mult: multiplier of every width (rounded to multiples of 8). Default: 1.0.
        small_input: stride-1 stem for 28-32 px images (the network then downsamples 16x). Default: ``False``.
        attention: one attention spec for every block, or a sequence of 17 (one per block).
        dropout: dropout probability before the classifier. Default: 0.2 (torchvision).

    Shape:
        - Input: ``(N, in_chans, H, W)``
        - Output: ``(N, num_classes)``

    Example:
        >>> import torch
        >>> net = MobileNetV2(num_classes=10, width_mult=0.25, small_input=True, attention="eca")
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        small_input: bool = False,
        attention: AttentionSpec | Sequence[AttentionSpec] = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"width_mult must be a number > 0, got {width_mult!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if isinstance(attention, (list, tuple)):
            if len(attention) != NUM_BLOCKS:
                raise ValueError(f"attention given per block needs {NUM_BLOCKS} entries, got {len(attention)}")
            block_attention = list(attention)
        else:
            block_attention = [attention] * NUM_BLOCKS
        input_channel = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(in_chans, input_channel, stride=1 if small_input else 2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = make_divisible(c * width_mult)
            for i in range(n):
                spec = block_attention[len(features) - 1]
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t, spec))
                input_channel = output_channel
        features.append(_conv_bn_relu6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self.num_classes = num_classes
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier[1].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[1].bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The stem, the 17 blocks and the last 1x1 convolution: ``(N, last_channel, H / 32, W / 32)``."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x.flatten(1))


def official_mobilenet_kernel_sizes() -> list[int]:
    """The k of the authors' ECA-MobileNetV2 checkpoint per block: 1 where the block's (unscaled) width c < 96, else 3.

    Example:
        >>> official_mobilenet_kernel_sizes()
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3]
    """
    return [1 if c < 96 else 3 for _, c, n, _ in INVERTED_RESIDUAL_SETTING for _ in range(n)]


def mobilenet_v2(*, attention: AttentionSpec = None, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2 (torchvision's parameter names). Keyword arguments as for :class:`MobileNetV2`.

    Example:
        >>> mobilenet_v2(width_mult=0.5).last_channel
        1280
    """
    return MobileNetV2(attention=attention, **kwargs)


def eca_mobilenet_v2(
    *,
    kernel_sizes: str | int | Sequence[int] = "official",
    attention: AttentionSpec = "eca",
    dropout: float = 0.25,
    **kwargs: Any,
) -> MobileNetV2:
    """ECA-MobileNetV2 with the authors' k (1 in blocks narrower than 96 channels, else 3) by default.

    Args:
        kernel_sizes: ``"official"`` (see :func:`official_mobilenet_kernel_sizes`), ``"adaptive"``
            (the paper's formula on each block's width), an odd int, or 17 odd ints (one per block).
            Only with ``attention="eca"``.
        attention: override of the attention (``kernel_sizes`` then must stay ``"official"``).
        dropout: dropout before the classifier; the authors trained with 0.25.
        **kwargs: as for :class:`MobileNetV2`.

    Example:
        >>> net = eca_mobilenet_v2(width_mult=0.25)
        >>> net.features[1].eca, net.features[17].eca
        (ECA(8, k=1, padding=zeros, pooling=avg, gate=sigmoid), ECA(80, k=3, padding=zeros, pooling=avg, gate=sigmoid))
    """
    if not names_eca(attention):
        if kernel_sizes != "official":
            raise ValueError(
                f"kernel_sizes={kernel_sizes!r} applies to attention='eca' only, got attention={attention!r}"
            )
        return MobileNetV2(attention=attention, dropout=dropout, **kwargs)
    if kernel_sizes == "adaptive":
        return MobileNetV2(attention="eca", dropout=dropout, **kwargs)
    if kernel_sizes == "official":
        kernel_sizes = official_mobilenet_kernel_sizes()
    elif isinstance(kernel_sizes, int) and not isinstance(kernel_sizes, bool):
        kernel_sizes = [kernel_sizes] * NUM_BLOCKS
    if not isinstance(kernel_sizes, (list, tuple)) or len(kernel_sizes) != NUM_BLOCKS:
        raise ValueError(
            f"kernel_sizes must be 'official', 'adaptive', an odd int or {NUM_BLOCKS} odd ints, got {kernel_sizes!r}"
        )
    return MobileNetV2(attention=[partial(ECA, kernel_size=k) for k in kernel_sizes], dropout=dropout, **kwargs)


_SE_REDUCTION_8 = partial(SE, reduction=8)


def se_mobilenet_v2(*, attention: AttentionSpec = _SE_REDUCTION_8, dropout: float = 0.25, **kwargs: Any) -> MobileNetV2:
    """SE-MobileNetV2 as in the ECA paper: SE with reduction 8 where ECA would be.

    Args:
        attention: override of the attention. Default: SE with ``reduction=8``.
        dropout: dropout before the classifier (0.25, as the ECA variant).
        **kwargs: as for :class:`MobileNetV2`.

    Example:
        >>> se_mobilenet_v2(width_mult=0.5).features[17].conv[4]
        SE(160, reduction=8, hidden=20)
    """
    return MobileNetV2(attention=attention, dropout=dropout, **kwargs)
