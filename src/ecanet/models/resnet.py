"""ResNets with pluggable channel attention, in torchvision's layout and parameter names.

One definition serves the plain, ECA, SE and CBAM networks of the paper's Table 3. The blocks are
torchvision's v1.5 blocks (stride on the 3x3 convolution of the bottleneck) with one attention
module after the residual branch's last BatchNorm, before the addition. An ECA module is stored as
``eca`` (state-dict key ``layer1.0.eca.conv.weight``, as in the authors' checkpoints); any other
attention as ``attention``.
"""

import importlib
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ecanet.layers.eca import ECA, has_forward_hooks
from ecanet.layers.factory import AttentionSpec, create_attention, names_eca
from ecanet.models.pooling import pooled_through_norm, pooled_through_projection
from ecanet.models.projected_gate import forward_through_projected_gate, takes_projected_gate

__all__ = [
    "OFFICIAL_KERNEL_SIZES",
    "RESNET_ARCHITECTURES",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "build_resnet",
    "cbam_resnet18",
    "cbam_resnet34",
    "cbam_resnet50",
    "cbam_resnet101",
    "cbam_resnet152",
    "eca_resnet18",
    "eca_resnet34",
    "eca_resnet50",
    "eca_resnet101",
    "eca_resnet152",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "se_resnet18",
    "se_resnet34",
    "se_resnet50",
    "se_resnet101",
    "se_resnet152",
    "use_projected_gate",
]

# Per-stage k of the authors' released ImageNet checkpoints (chosen by hand, not by the formula).
OFFICIAL_KERNEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (3, 5, 7, 7),
    "resnet34": (3, 3, 5, 7),
    "resnet50": (3, 5, 5, 7),
    "resnet101": (3, 3, 5, 7),
    "resnet152": (3, 3, 5, 7),
}

# "official": the released checkpoints' k; "adaptive": the paper's formula on each block's width;
# an int: that k everywhere; four ints: k of layer1..layer4.
KernelSizes = str | int | Sequence[int]


class _AttentionBlock(nn.Module):
    """Shared tail of the residual blocks: attention, addition of the shortcut, ReLU."""

    eca: ECA | None
    attention: nn.Module | None

    def _attach_attention(self, attention: AttentionSpec, channels: int) -> None:
        module = create_attention(attention, channels)
        # ECA gets its own name (the official key) and the fused tail; others run before the addition.
        self.eca = module if isinstance(module, ECA) else None
        self.attention = None if isinstance(module, ECA) else module

    def _pools_before(self, *modules: nn.Module) -> bool:
        """Whether ECA's descriptor may be pooled before ``modules``, the last BatchNorm and any
        1x1 projection before it (see pooling.py): at inference, where that BatchNorm (in eval
        mode) is affine per channel; not while they have forward hooks (which may change the
        outputs the descriptor stands for) and not in a ``torch.jit.trace`` (which checks itself
        by tracing again under ``no_grad``: both traces must take the same operators)."""
        return (
            self.eca is not None
            and self.eca.pooling == "avg"
            and not torch.is_grad_enabled()
            and not torch.jit.is_tracing()
            and not any(has_forward_hooks(module) for module in modules)
        )

    def _compiled_descriptor(self, y: Tensor, norm: nn.Module) -> Tensor | None:
        """Under ``torch.compile``, ECA's descriptor pooled from the last BatchNorm's input ``y``, so
        that the BatchNorm fuses into the block tail (see pooling.py). Eagerly ECA's kernels pool
        the tail's input from cache instead, which costs less than another pass over ``y``."""
        if not torch.compiler.is_compiling() or not self._pools_before(norm):
            return None
        return pooled_through_norm(y, norm)

    def _tail(
        self, y: Tensor, norm: nn.Module, identity: Tensor, producer: nn.Module, descriptor: Tensor | None = None
    ) -> Tensor:
        """``relu(attention(norm(y)) + identity)``, ``y`` being ``producer``'s output; ECA takes the
        norm into its fused tail (see :meth:`ecanet.layers.ECA.residual_after_norm`: on a GPU at
        inference the norm costs no pass of its own, and the result goes into ``y``, unless a
        forward hook on ``producer`` may have kept ``y``)."""
        if self.eca is not None:
            inplace = not has_forward_hooks(producer)
            return self.eca.residual_after_norm(y, norm, identity, inplace=inplace, descriptor=descriptor)
        out = norm(y)
        if self.attention is not None:
            out = self.attention(out)
        out += identity
        return self.relu(out)


class BasicBlock(_AttentionBlock):
    """ResNet-18/34 block: ``conv3x3-bn-relu-conv3x3-bn``, attention, ``+ shortcut``, ReLU.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of the first convolution.
        downsample: the shortcut's projection, or ``None`` for the identity.
        attention: attention spec for :func:`ecanet.layers.factory.create_attention` (on ``planes`` channels).

    Shape:
        - Input: ``(N, inplanes, H, W)``
        - Output: ``(N, planes, H / stride, W / stride)``

    Example:
        >>> import torch
        >>> block = BasicBlock(16, 16, attention="eca")
        >>> block(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attention: AttentionSpec = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self._attach_attention(attention, planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        descriptor = self._compiled_descriptor(out, self.bn2)
        if self.downsample is not None:
            identity = self.downsample(x)
        return self._tail(out, self.bn2, identity, self.conv2, descriptor)


class Bottleneck(_AttentionBlock):
    """ResNet-50/101/152 block (v1.5: stride on the 3x3), attention on the ``4 * planes`` output.

    ``conv1x1-bn-relu-conv3x3-bn-relu-conv1x1-bn``, attention, ``+ shortcut``, ReLU.

    Args:
        inplanes: input channels.
        planes: width of the 3x3 convolution; the block outputs ``4 * planes`` channels.
        stride: stride of the 3x3 convolution.
        downsample: the shortcut's projection, or ``None`` for the identity.
        attention: attention spec for :func:`ecanet.layers.factory.create_attention` (on ``4 * planes`` channels).

    Shape:
        - Input: ``(N, inplanes, H, W)``
        - Output: ``(N, 4 * planes, H / stride, W / stride)``

    Example:
        >>> import torch
        >>> block = Bottleneck(64, 16, attention="se")
        >>> block(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    expansion = 4
    projected_gate = False
    """Whether compiled inference runs ECA through its operators (:func:`use_projected_gate`)."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attention: AttentionSpec = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._attach_attention(attention, planes * self.expansion)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.projected_gate and takes_projected_gate(self, x):
            return forward_through_projected_gate(self, x)
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        descriptor = None
        if self._pools_before(self.conv3, self.bn3):
            # ECA's pooled mean through conv3 and bn3: a quarter of the bytes to read (see pooling.py).
            descriptor = pooled_through_projection(out, self.conv3, self.bn3)
        out = self.conv3(out)
        if descriptor is None:
            descriptor = self._compiled_descriptor(out, self.bn3)
        if self.downsample is not None:
            identity = self.downsample(x)
        return self._tail(out, self.bn3, identity, self.conv3, descriptor)


class ResNet(nn.Module):
    """A ResNet with optional channel attention in every block (torchvision names and layout).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in each of the four stages, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        num_classes: outputs of the classifier. Default: 1000.
        in_chans: input channels. Default: 3.
        width: output channels of the stem and base width of ``layer1`` (stages use ``width * 2**i``).
            Default: 64; 16 gives a tiny network for tests and CPU demos.
        small_input: a 3x3 stride-1 stem without max-pool, for 28-32 px images. Default: ``False``.
        attention: one attention spec for every block (``None``, ``"eca"``, ``"se"``, ``"cbam"`` or a
            callable taking the channel count first), or a sequence of four, one per stage.
        zero_init_residual: start every block's last BatchNorm at zero, so blocks begin as identities.

    Shape:
        - Input: ``(N, in_chans, H, W)``
        - Output: ``(N, num_classes)``

    Example:
        >>> import torch
        >>> net = ResNet(BasicBlock, (1, 1, 1, 1), num_classes=10, width=8, attention="eca")
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width: int = 64,
        small_input: bool = False,
        attention: AttentionSpec | Sequence[AttentionSpec] = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be four positive ints (blocks per stage), got {layers!r}")
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        stage_attention = _per_stage(attention)
        self.inplanes = width
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0], 1, stage_attention[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2, stage_attention[1])
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2, stage_attention[2])
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2, stage_attention[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        self.num_classes = num_classes
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int, attention: AttentionSpec
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample, attention)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, attention=attention) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_features(self, x: Tensor) -> Tensor:
        """The stem and the four stages: the last feature map, ``(N, C, H / 32, W / 32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(x.flatten(1))


def use_projected_gate(model: nn.Module, enabled: bool = True) -> int:
    """Runs the ECA bottlenecks of ``model`` through ECA's compiled-inference operators, or back.

    Under ``torch.compile`` at inference each ECA :class:`Bottleneck` then writes its 3x3 branch's
    activation and that activation's pooled sums in one pass and works out ECA's gate through
    ``conv3`` and ``bn3`` in one launch (:mod:`ecanet.models.projected_gate`,
    :mod:`ecanet.ops.projected_gate`): Triton kernels on CUDA tensors, plain operators on CPU
    tensors. Off by default: meant to take ECA-ResNet's compiled GPU inference to within 3% of
    ResNet's, it has not been timed on a GPU yet (``ecanet bench --device cuda`` compares both).

    Args:
        model: any module; its :class:`Bottleneck` blocks with ECA are switched.
        enabled: ``False`` switches them back to the default compiled path.

    Returns:
        How many blocks were switched.

    Example:
        >>> net = eca_resnet50(num_classes=10, width=8)
        >>> use_projected_gate(net)
        16
    """
    if enabled:
        importlib.import_module("ecanet.ops.projected_gate")  # registers the operators
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck) and m.eca is not None]
    for block in blocks:
        block.projected_gate = enabled
    return len(blocks)


def _per_stage(attention: AttentionSpec | Sequence[AttentionSpec]) -> list[AttentionSpec]:
    if isinstance(attention, (list, tuple)):
        if len(attention) != 4:
            raise ValueError(f"attention given per stage needs 4 entries (layer1..layer4), got {len(attention)}")
        return list(attention)
    return [attention] * 4  # type: ignore[list-item]


# Architecture name -> (block, blocks per stage).
RESNET_ARCHITECTURES: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def eca_stage_attention(kernel_sizes: KernelSizes, architecture: str) -> list[AttentionSpec]:
    """ECA specs for the four stages of ``architecture`` from a ``kernel_sizes`` choice.

    Args:
        kernel_sizes: ``"official"`` (k of the released checkpoints, see :data:`OFFICIAL_KERNEL_SIZES`),
            ``"adaptive"`` (the paper's formula on each block's width), an odd int for every stage,
            or four odd ints (layer1..layer4).
        architecture: a key of :data:`RESNET_ARCHITECTURES`, e.g. ``"resnet50"``.

    Returns:
        Four attention specs, one per stage.

    Example:
        >>> [spec.keywords for spec in eca_stage_attention("official", "resnet50")]
        [{'kernel_size': 3}, {'kernel_size': 5}, {'kernel_size': 5}, {'kernel_size': 7}]
    """
    if architecture not in OFFICIAL_KERNEL_SIZES:
        raise ValueError(f"architecture must be one of {list(OFFICIAL_KERNEL_SIZES)}, got {architecture!r}")
    if kernel_sizes == "adaptive":
        return ["eca"] * 4
    if kernel_sizes == "official":
        kernel_sizes = OFFICIAL_KERNEL_SIZES[architecture]
    elif isinstance(kernel_sizes, str):
        raise ValueError(f"kernel_sizes must be 'official', 'adaptive', an odd int or 4 odd ints, got {kernel_sizes!r}")
    if isinstance(kernel_sizes, int) and not isinstance(kernel_sizes, bool):
        kernel_sizes = (kernel_sizes,) * 4
    if not isinstance(kernel_sizes, (list, tuple)) or len(kernel_sizes) != 4:
        raise ValueError(f"kernel_sizes must be 'official', 'adaptive', an odd int or 4 odd ints, got {kernel_sizes!r}")
    # ECA validates each k (positive, odd) when the blocks are built.
    return [partial(ECA, kernel_size=k) for k in kernel_sizes]


def build_resnet(
    architecture: str,
    *,
    attention: AttentionSpec | Sequence[AttentionSpec] = None,
    kernel_sizes: KernelSizes | None = None,
    **kwargs: Any,
) -> ResNet:
    """Builds ``architecture`` (``"resnet18"`` ... ``"resnet152"``) with the given attention.

    Args:
        architecture: a key of :data:`RESNET_ARCHITECTURES`.
        attention: attention spec, or four (one per stage), as for :class:`ResNet`.
        kernel_sizes: ECA kernel sizes (see :func:`eca_stage_attention`); only with ``attention="eca"``.
            ``None`` leaves ECA's adaptive default.
        **kwargs: ``num_classes``, ``in_chans``, ``width``, ``small_input``, ``zero_init_residual``
            (see :class:`ResNet`).

    Example:
        >>> net = build_resnet("resnet18", attention="eca", kernel_sizes=5, width=8)
        >>> net.layer1[0].eca.kernel_size
        5
    """
    if architecture not in RESNET_ARCHITECTURES:
        raise ValueError(f"architecture must be one of {list(RESNET_ARCHITECTURES)}, got {architecture!r}")
    if kernel_sizes is not None:
        if not names_eca(attention):
            raise ValueError(
                f"kernel_sizes={kernel_sizes!r} applies to attention='eca' only, got attention={attention!r}"
            )
        attention = eca_stage_attention(kernel_sizes, architecture)
    block, layers = RESNET_ARCHITECTURES[architecture]
    return ResNet(block, layers, attention=attention, **kwargs)


def _eca_resnet(
    architecture: str, attention: AttentionSpec, kernel_sizes: KernelSizes, kwargs: dict[str, Any]
) -> ResNet:
    # The "official" default only means something for ECA; an explicit choice with another attention is an error.
    if not names_eca(attention) and kernel_sizes == "official":
        return build_resnet(architecture, attention=attention, **kwargs)
    return build_resnet(architecture, attention=attention, kernel_sizes=kernel_sizes, **kwargs)


def resnet18(*, attention: AttentionSpec = None, **kwargs: Any) -> ResNet:
    """ResNet-18 (torchvision's parameter names). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> import torch
        >>> resnet18(num_classes=10, small_input=True, width=8)(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return build_resnet("resnet18", attention=attention, **kwargs)


def resnet34(*, attention: AttentionSpec = None, **kwargs: Any) -> ResNet:
    """ResNet-34 (torchvision's parameter names). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> len(resnet34(width=8).layer3)
        6
    """
    return build_resnet("resnet34", attention=attention, **kwargs)


def resnet50(*, attention: AttentionSpec = None, **kwargs: Any) -> ResNet:
    """ResNet-50 v1.5 (torchvision's parameter names). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> resnet50(width=8).fc.in_features
        256
    """
    return build_resnet("resnet50", attention=attention, **kwargs)


def resnet101(*, attention: AttentionSpec = None, **kwargs: Any) -> ResNet:
    """ResNet-101 v1.5 (torchvision's parameter names). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> len(resnet101(width=8).layer3)
        23
    """
    return build_resnet("resnet101", attention=attention, **kwargs)


def resnet152(*, attention: AttentionSpec = None, **kwargs: Any) -> ResNet:
    """ResNet-152 v1.5 (torchvision's parameter names). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> len(resnet152(width=8).layer3)
        36
    """
    return build_resnet("resnet152", attention=attention, **kwargs)


def eca_resnet18(*, kernel_sizes: KernelSizes = "official", attention: AttentionSpec = "eca", **kwargs: Any) -> ResNet:
    """ECA-ResNet-18; ``kernel_sizes="official"`` gives the released checkpoint's k = 3, 5, 7, 7.

    Args:
        kernel_sizes: ``"official"``, ``"adaptive"``, an odd int or four (see :func:`eca_stage_attention`).
        attention: override of the attention (``kernel_sizes`` then must stay ``"official"``).
        **kwargs: as for :class:`ResNet`.

    Example:
        >>> net = eca_resnet18(width=8)
        >>> [stage[0].eca.kernel_size for stage in (net.layer1, net.layer2, net.layer3, net.layer4)]
        [3, 5, 7, 7]
    """
    return _eca_resnet("resnet18", attention, kernel_sizes, kwargs)


def eca_resnet34(*, kernel_sizes: KernelSizes = "official", attention: AttentionSpec = "eca", **kwargs: Any) -> ResNet:
    """ECA-ResNet-34; ``kernel_sizes="official"`` gives the released checkpoint's k = 3, 3, 5, 7.

    Arguments as for :func:`eca_resnet18`.

    Example:
        >>> eca_resnet34(width=8).layer3[0].eca.kernel_size
        5
    """
    return _eca_resnet("resnet34", attention, kernel_sizes, kwargs)


def eca_resnet50(*, kernel_sizes: KernelSizes = "official", attention: AttentionSpec = "eca", **kwargs: Any) -> ResNet:
    """ECA-ResNet-50; ``kernel_sizes="official"`` gives the released checkpoint's k = 3, 5, 5, 7.

    Arguments as for :func:`eca_resnet18`.

    Example:
        >>> eca_resnet50(width=8, kernel_sizes="adaptive").layer4[0].eca
        ECA(256, k=5, padding=zeros, pooling=avg, gate=sigmoid)
    """
    return _eca_resnet("resnet50", attention, kernel_sizes, kwargs)


def eca_resnet101(*, kernel_sizes: KernelSizes = "official", attention: AttentionSpec = "eca", **kwargs: Any) -> ResNet:
    """ECA-ResNet-101; ``kernel_sizes="official"`` gives the released checkpoint's k = 3, 3, 5, 7.

    Arguments as for :func:`eca_resnet18`.

    Example:
        >>> eca_resnet101(width=8).layer4[2].eca.kernel_size
        7
    """
    return _eca_resnet("resnet101", attention, kernel_sizes, kwargs)


def eca_resnet152(*, kernel_sizes: KernelSizes = "official", attention: AttentionSpec = "eca", **kwargs: Any) -> ResNet:
    """ECA-ResNet-152; ``kernel_sizes="official"`` gives the released checkpoint's k = 3, 3, 5, 7.

    Arguments as for :func:`eca_resnet18`.

    Example:
        >>> eca_resnet152(width=8).layer2[7].eca.kernel_size
        3
    """
    return _eca_resnet("resnet152", attention, kernel_sizes, kwargs)


def se_resnet18(*, attention: AttentionSpec = "se", **kwargs: Any) -> ResNet:
    """SE-ResNet-18 (reduction 16). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> se_resnet18(width=16).layer4[0].attention
        SE(128, reduction=16, hidden=8)
    """
    return build_resnet("resnet18", attention=attention, **kwargs)


def se_resnet34(*, attention: AttentionSpec = "se", **kwargs: Any) -> ResNet:
    """SE-ResNet-34 (reduction 16). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> se_resnet34(width=16).layer1[0].attention
        SE(16, reduction=16, hidden=1)
    """
    return build_resnet("resnet34", attention=attention, **kwargs)


def se_resnet50(*, attention: AttentionSpec = "se", **kwargs: Any) -> ResNet:
    """SE-ResNet-50 (reduction 16), the paper's SE baseline. Keyword arguments as for :class:`ResNet`.

    Example:
        >>> se_resnet50(width=8).layer1[0].attention
        SE(32, reduction=16, hidden=2)
    """
    return build_resnet("resnet50", attention=attention, **kwargs)


def se_resnet101(*, attention: AttentionSpec = "se", **kwargs: Any) -> ResNet:
    """SE-ResNet-101 (reduction 16). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> se_resnet101(width=8).layer4[0].attention
        SE(256, reduction=16, hidden=16)
    """
    return build_resnet("resnet101", attention=attention, **kwargs)


def se_resnet152(*, attention: AttentionSpec = "se", **kwargs: Any) -> ResNet:
    """SE-ResNet-152 (reduction 16). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> se_resnet152(width=8).layer4[0].attention
        SE(256, reduction=16, hidden=16)
    """
    return build_resnet("resnet152", attention=attention, **kwargs)


def cbam_resnet18(*, attention: AttentionSpec = "cbam", **kwargs: Any) -> ResNet:
    """CBAM-ResNet-18 (reduction 16, 7x7 spatial kernel). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> cbam_resnet18(width=16).layer4[0].attention
        CBAM(128, reduction=16, hidden=8, spatial_kernel_size=7, spatial_dims=2)
    """
    return build_resnet("resnet18", attention=attention, **kwargs)


def cbam_resnet34(*, attention: AttentionSpec = "cbam", **kwargs: Any) -> ResNet:
    """CBAM-ResNet-34 (reduction 16, 7x7 spatial kernel). Keyword arguments as for :class:`ResNet`.

    Example:
        >>> len(cbam_resnet34(width=8).layer2)
        4
    """
    return build_resnet("resnet34", attention=attention, **kwargs)


def cbam_resnet50(*, attention: AttentionSpec = "cbam", **kwargs: Any) -> ResNet:
    """CBAM-ResNet-50, the paper's CBAM baseline. Keyword arguments as for :class:`ResNet`.

    Example:
        >>> cbam_resnet50(width=8).layer1[0].attention.channels
        32
    """
    return build_resnet("resnet50", attention=attention, **kwargs)


def cbam_resnet101(*, attention: AttentionSpec = "cbam", **kwargs: Any) -> ResNet:
    """CBAM-ResNet-101. Keyword arguments as for :class:`ResNet`.

    Example:
        >>> len(cbam_resnet101(width=8).layer3)
        23
    """
    return build_resnet("resnet101", attention=attention, **kwargs)


def cbam_resnet152(*, attention: AttentionSpec = "cbam", **kwargs: Any) -> ResNet:
    """CBAM-ResNet-152. Keyword arguments as for :class:`ResNet`.

    Example:
        >>> len(cbam_resnet152(width=8).layer2)
        8
    """
    return build_resnet("resnet152", attention=attention, **kwargs)
