"""Editing a model in place: :func:`add_eca` and :func:`remove_eca`."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ecanet.layers.eca import ECA
from ecanet.retrofit.optimizer import update_optimizer
from ecanet.retrofit.plan import KernelSize, plan_eca
from ecanet.retrofit.report import RetrofitReport
from ecanet.retrofit.wrappers import ECAAfter, ECAInsteadOf

__all__ = ["add_eca", "remove_eca"]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, module)


def _check_not_distributed(model: nn.Module) -> None:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise ValueError(
            "model is wrapped in DistributedDataParallel, which fixed its parameters when it was built; "
            "edit the plain model (call add_eca/remove_eca before wrapping it)"
        )


def _factory_kwargs(module: nn.Module, model: nn.Module) -> dict[str, Any]:
    """Device and dtype for a new ECA: those of the module it joins, else of the model."""
    for source in (module, model):
        for tensor in (*source.parameters(), *source.buffers()):
            if tensor.is_floating_point():
                return {"device": tensor.device, "dtype": tensor.dtype}
    return {}


def add_eca(
    model: nn.Module,
    *,
    kernel_size: KernelSize = "adaptive",
    min_channels: int = 16,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    replace_se: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    **eca_options: Any,
) -> RetrofitReport:
    """Adds Efficient Channel Attention to an existing model, in place, and reports what it did.

    ECA goes where the paper puts it: on each residual branch, after its last normalization,
    before the addition. Known block families (torchvision ResNet/ResNeXt/Wide-ResNet,
    MobileNetV2/V3, EfficientNet, RegNet, ConvNeXt; timm ResNet and EfficientNet blocks) are
    recognised by class; other models are traced with torch.fx to find residual additions; a model
    that cannot be traced or has no residual additions gets ECA after every feature-map
    normalization. Blocks that already have channel attention get no second one. The module ECA
    follows is replaced by an ``ECAAfter(module, eca)`` container that keeps the original object,
    so :func:`remove_eca` restores the model exactly. A second call adds nothing (with a warning).

    Args:
        model: the model to edit in place.
        kernel_size: ``"adaptive"`` (the paper's rule on each place's channels), an odd int for
            every place, or a callable ``(name, channels) -> k``.
        min_channels: places narrower than this get no ECA. Default: 16.
        include: module-name patterns (``fnmatch``; a pattern matching a parent selects
            everything inside it, so ``"layer4"`` selects ``layer4.0.bn3``); only matching places
            get ECA.
        exclude: module-name patterns of places that get no ECA.
        replace_se: swap every squeeze-and-excitation module (torchvision ``SqueezeExcitation``,
            timm's SE modules, :class:`ecanet.SE`) for ECA of the same width.
        optimizer: if given, the new ECA weights join the param group of their neighbouring
            weights, and the weights of swapped-out SE modules leave it, with their state.
        **eca_options: passed to every new :class:`ecanet.ECA`: ``gamma``, ``beta`` (also used by
            the adaptive kernel size), ``padding``, ``pooling``, ``gate``, ``shared``.

    Returns:
        A :class:`RetrofitReport`; ``print(report)`` shows a table.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> report = add_eca(model)
        >>> len(report), report.params_added, report.strategies
        (8, 36, {'family: torchvision ResNet': 8})
        >>> type(model.layer1[0].bn2).__name__, model.layer1[0].bn2.eca
        ('ECAAfter', ECA(64, k=3, padding=zeros, pooling=avg, gate=sigmoid))
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    _check_not_distributed(model)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    report = plan_eca(
        model,
        kernel_size=kernel_size,
        min_channels=min_channels,
        include=include,
        exclude=exclude,
        replace_se=replace_se,
        **eca_options,
    )
    # Build every layer before editing anything: a failure leaves the model untouched.
    targets = [model.get_submodule(place.name) for place in report.places]
    layers = [
        ECA(p.channels, p.kernel_size, channel_dim=p.channel_dim, **eca_options, **_factory_kwargs(t, model))
        for p, t in zip(report.places, targets, strict=True)
    ]
    added: list[tuple[nn.Parameter, nn.Module]] = []
    removed: list[nn.Parameter] = []
    for place, target, eca in zip(report.places, targets, layers, strict=True):
        if place.action == "insert":
            container: nn.Module = ECAAfter(target, eca)
        else:
            container = ECAInsteadOf(eca, target)
            removed.extend(target.parameters())
        _set_submodule(model, place.name, container.train(target.training))
        added.append((eca.conv.weight, target))
    if optimizer is not None:
        update_optimizer(optimizer, added, removed)
    if not report.places:
        already = any(s.reason.startswith(("already has ECA", "SE already")) for s in report.skipped)
        message = (
            "add_eca: the model already has ECA everywhere it would go; nothing added"
            if already
            else "add_eca: found no place for ECA; nothing added (see the report's skipped places and notes)"
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        report = dataclasses.replace(report, notes=(*report.notes, message))
    return dataclasses.replace(report, applied=True)


def remove_eca(model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Undoes :func:`add_eca`: puts back every original module object, in place.

    The restored model computes exactly what it computed before ``add_eca`` (same module objects,
    same parameters); swapped-out SE modules come back with the weights they had when swapped,
    moved to the model's current device and dtype.

    Args:
        model: a model edited by :func:`add_eca` (a model without retrofits is left as is).
        optimizer: if given, the ECA weights leave it, with their state, and the weights of
            restored SE modules join the param group their ECA was in (with fresh state).

    Returns:
        The number of places restored.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.resnet18()
        >>> bn = model.layer1[0].bn2
        >>> _ = add_eca(model)
        >>> remove_eca(model), model.layer1[0].bn2 is bn
        (8, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_not_distributed(model)
    if isinstance(model, (ECAAfter, ECAInsteadOf)):
        raise ValueError("model is itself a retrofit container; remove_eca needs the model that holds it")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    containers = [(name, m) for name, m in model.named_modules() if isinstance(m, (ECAAfter, ECAInsteadOf))]
    added: list[tuple[nn.Parameter, nn.Module]] = []
    removed: list[nn.Parameter] = []
    for name, container in containers:
        original = container.original()
        removed.extend(container.eca.parameters())
        if isinstance(container, ECAInsteadOf):
            added.extend((param, container.eca) for param in original.parameters())
        _set_submodule(model, name, original)
    if optimizer is not None:
        update_optimizer(optimizer, added, removed)
    return len(containers)
