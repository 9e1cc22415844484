"""Placement in known residual-block families (torchvision and timm), by block class.

Each policy names the module after which ECA goes in one block class: the last normalization
of the residual branch, before the addition, as in the paper. ConvNeXt's branch ends in a
channels-last linear layer (its normalization is in the middle), so there ECA follows that layer
with ``channel_dim=-1``. A block that already holds channel attention gets none added: an SE
is swapped by ``replace_se=True`` instead, and an ECA is left alone.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ecanet.retrofit.places import Candidate, SkippedPlace, join, walk
from ecanet.retrofit.recognize import attention_kind, norm_output
from ecanet.retrofit.wrappers import ECAAfter, ECAInsteadOf

__all__ = ["ATTENTION_REASONS", "SE_REASON", "BlockPolicy", "block_policies", "find_family_places"]

# (relative name of the module ECA follows, channels, channel_dim) in one block.
BranchEnd = tuple[str, int, int]


@dataclass(frozen=True)
class BlockPolicy:
    """Where ECA goes in one block class.

    Attributes:
        family: name shown in the report, e.g. ``"torchvision ResNet"``.
        block_type: the block class (subclasses match too).
        branch_end: maps a block to the module ECA follows, with its width and channel dim.
    """

    family: str
    block_type: type
    branch_end: Callable[[nn.Module], BranchEnd]


def _named(attribute: str) -> Callable[[nn.Module], BranchEnd]:
    """The branch ends at the normalization ``block.<attribute>`` (``bn2``, ``bn3``)."""

    def branch_end(block: nn.Module) -> BranchEnd:
        target = block.get_submodule(attribute)
        if isinstance(target, ECAAfter):
            target = target.module
        output = norm_output(target)
        if output is None:
            raise ValueError(f"{type(block).__name__}.{attribute} is {type(target).__name__}, not a normalization")
        return (attribute, *output)

    return branch_end


def _last_norm_in(attribute: str) -> Callable[[nn.Module], BranchEnd]:
    """The branch ends at the last normalization inside ``block.<attribute>`` (a Sequential)."""

    def branch_end(block: nn.Module) -> BranchEnd:
        found: list[BranchEnd] = []

        def visit(name: str, module: nn.Module) -> bool:
            inner = module.module if isinstance(module, ECAAfter) else module
            output = norm_output(inner)
            if output is not None:
                found.append((join(attribute, name), *output))
            return output is None

        walk(block.get_submodule(attribute), visit)
        if not found:
            raise ValueError(f"{type(block).__name__}.{attribute} holds no normalization layer")
        return found[-1]

    return branch_end


def _convnext_branch_end(block: nn.Module) -> BranchEnd:
    """torchvision CNBlock: ``block`` is dwconv, permute, LayerNorm, Linear, GELU, Linear, permute."""
    layers = list(block.block.named_children())
    name, last_linear = next((n, m) for n, m in reversed(layers) if isinstance(m, (nn.Linear, ECAAfter)))
    if isinstance(last_linear, ECAAfter):
        last_linear = last_linear.module
    return join("block", name), last_linear.out_features, -1


_POLICY_TABLE = (
    ("torchvision ResNet", "torchvision.models.resnet:BasicBlock", _named("bn2")),
    ("torchvision ResNet", "torchvision.models.resnet:Bottleneck", _named("bn3")),
    ("torchvision MobileNetV2", "torchvision.models.mobilenetv2:InvertedResidual", _last_norm_in("conv")),
    ("torchvision MobileNetV3", "torchvision.models.mobilenetv3:InvertedResidual", _last_norm_in("block")),
    ("torchvision EfficientNet", "torchvision.models.efficientnet:MBConv", _last_norm_in("block")),
    ("torchvision EfficientNet", "torchvision.models.efficientnet:FusedMBConv", _last_norm_in("block")),
    ("torchvision RegNet", "torchvision.models.regnet:ResBottleneckBlock", _last_norm_in("f")),
    ("torchvision ConvNeXt", "torchvision.models.convnext:CNBlock", _convnext_branch_end),
    ("timm ResNet", "timm.models.resnet:BasicBlock", _named("bn2")),
    ("timm ResNet", "timm.models.resnet:Bottleneck", _named("bn3")),
    ("timm EfficientNet", "timm.models._efficientnet_blocks:DepthwiseSeparableConv", _named("bn2")),
    ("timm EfficientNet", "timm.models._efficientnet_blocks:InvertedResidual", _named("bn3")),
    ("timm EfficientNet", "timm.models._efficientnet_blocks:EdgeResidual", _named("bn2")),
)


@functools.cache
def block_policies() -> tuple[BlockPolicy, ...]:
    """The policies whose package (torchvision, timm) is installed; the first matching class wins.

    Example:
        >>> any(p.family == "torchvision ResNet" for p in block_policies())
        True
    """
    policies = []
    for family, path, branch_end in _POLICY_TABLE:
        module_name, class_name = path.split(":")
        try:
            block_type = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        policies.append(BlockPolicy(family, block_type, branch_end))
    return tuple(policies)


def _attention_in(block: nn.Module) -> str | None:
    """``"eca"``, ``"se"`` or ``"other"`` if the block already holds channel attention."""
    kinds = set()
    for module in block.modules():
        if isinstance(module, (ECAAfter, ECAInsteadOf)):
            kinds.add("eca")
        kind = attention_kind(module)
        if kind is not None:
            kinds.add(kind)
    for kind in ("eca", "se", "other"):
        if kind in kinds:
            return kind
    return None


SE_REASON = "already has SE attention"
ATTENTION_REASONS = {  # why a block with channel attention of this kind gets no ECA on top
    "eca": "already has ECA",
    "se": SE_REASON,
    "other": "already has channel attention",
}


def find_family_places(model: nn.Module) -> tuple[list[Candidate], list[SkippedPlace]]:
    """Places in every block of a known family, and the blocks skipped because they have attention.

    Blocks are not searched for nested blocks.

    Args:
        model: the model to search.

    Returns:
        ``(candidates, skipped)``, both in module order.

    Example:
        >>> from torchvision.models.resnet import BasicBlock
        >>> places, skipped = find_family_places(nn.Sequential(BasicBlock(16, 16)))
        >>> [(p.name, p.channels, p.strategy) for p in places]
        [('0.bn2', 16, 'family: torchvision ResNet')]
    """
    places: list[Candidate] = []
    skipped: list[SkippedPlace] = []
    policies = block_policies()

    def visit(name: str, module: nn.Module) -> bool:
        policy = next((p for p in policies if isinstance(module, p.block_type)), None)
        if policy is None:
            return True
        try:
            relative, channels, channel_dim = policy.branch_end(module)
        except ValueError as error:  # a block built without normalization (norm_layer=nn.Identity)
            skipped.append(SkippedPlace(name, str(error)))
            return False
        full = join(name, relative)
        attention = _attention_in(module)
        if attention is not None:
            skipped.append(SkippedPlace(full, ATTENTION_REASONS[attention]))
        else:
            target_type = type(module.get_submodule(relative)).__name__
            places.append(Candidate(full, "insert", f"family: {policy.family}", target_type, channels, channel_dim))
        return False

    walk(model, visit)
    return places, skipped
