"""Loading the authors' released checkpoints (and torchvision weights) safely, without guessing k.

The official files are ``torch.save`` dicts (``.pth.tar`` by name only) holding ``state_dict`` with
DataParallel's ``module.`` prefixes, and their kernel sizes are not the formula's. Here every file
is read with ``weights_only=True`` (a pickled callable is refused, never run), unwrapped, and, when
no model is given, the architecture, the block counts and every ECA kernel size are read off the
tensor shapes.
"""

import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from ecanet.layers.cbam import CBAM
from ecanet.layers.eca import ECA
from ecanet.layers.factory import AttentionSpec
from ecanet.layers.se import SE
from ecanet.models.mobilenetv2 import NUM_BLOCKS, MobileNetV2
from ecanet.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = [
    "StateDictDiff",
    "infer_model",
    "load_matching_state_dict",
    "load_official_checkpoint",
    "read_state_dict",
]

_ATTENTION_TYPES = (ECA, SE, CBAM)
_SHOWN = 8  # keys listed per category in error messages


@dataclass(frozen=True)
class StateDictDiff:
    """How a state dict differs from a model's: keys missing from it, unexpected in it, of other shapes.

    Attributes:
        missing: model keys the state dict lacks.
        unexpected: state-dict keys the model lacks.
        mismatched: ``(key, shape in the state dict, shape in the model)`` for keys in both.
        new_attention: the subset of ``missing`` that belongs to attention modules (ECA, SE, CBAM):
            what stays freshly initialised when plain weights are loaded into an attention model.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    new_attention: list[str] = field(default_factory=list)

    @property
    def loadable(self) -> bool:
        """True when the only differences are attention weights the state dict lacks."""
        return not self.unexpected and not self.mismatched and len(self.missing) == len(self.new_attention)

    def describe(self) -> str:
        """A readable account of the differences, a few keys per category.

        Example:
            >>> print(StateDictDiff(missing=["fc.bias"]).describe())
            missing from the state dict (1): fc.bias
        """
        lines = []
        for title, items in (
            ("missing from the state dict", self.missing),
            ("unexpected (not in the model)", self.unexpected),
            ("shape mismatch (state dict vs model)", [f"{k} {a} vs {b}" for k, a, b in self.mismatched]),
        ):
            if items:
                more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
                lines.append(f"{title} ({len(items)}): {', '.join(items[:_SHOWN])}{more}")
        return "\n".join(lines) if lines else "state dict matches the model"


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Reads a checkpoint file safely and returns its bare state dict.

    Accepts a bare state dict or a dict wrapping one under ``state_dict`` or ``model`` (the
    official ``.pth.tar`` container with ``epoch``, ``arch``, ``best_prec1``, ``optimizer``), in
    either of ``torch.save``'s formats, and strips DataParallel's ``module.`` prefixes. Only tensors
    and plain containers are unpickled (``weights_only=True``): a file holding any other pickled
    object is refused without running it.

    Args:
        path: the checkpoint file.

    Returns:
        ``{parameter name: tensor}`` on the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint, truncated, holding pickled objects, or no state dict inside.

    Example:
        >>> import tempfile, torch
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"epoch": 1, "state_dict": {"module.fc.bias": torch.zeros(2)}}, f"{tmp}/ckpt.pth.tar")
        ...     read_state_dict(f"{tmp}/ckpt.pth.tar")
        {'fc.bias': tensor([0., 0.])}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint path {str(path)!r} is not a file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the first global (class or function) it refused to import.
        refused = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if refused:
            raise ValueError(
                f"refusing to load {str(path)!r}: it holds pickled objects other than tensors and plain "
                f"containers, and nothing in it was run ({refused[0]}). Load it with weights_only=False "
                f"only if you trust its source."
            ) from error
        raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint (or is corrupted): {error}") from error
    except Exception as error:  # torch.load fails in many ways on a file that is not a checkpoint
        raise ValueError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (truncated or corrupted?): "
            f"{type(error).__name__}: {error}"
        ) from error
    state_dict = content
    if isinstance(content, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(content.get(wrapper), Mapping):
                state_dict = content[wrapper]
                break
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(f"{str(path)!r} holds a {type(content).__name__}, not a (non-empty) state dict")
    not_tensors = [str(k) for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(
            f"{str(path)!r} does not hold a state dict: entries {not_tensors[:_SHOWN]} are not tensors "
            f"(top-level keys: {list(content)[:_SHOWN] if isinstance(content, Mapping) else type(content).__name__})"
        )
    return {_strip_prefix(str(key)): value for key, value in state_dict.items()}


def _strip_prefix(key: str) -> str:
    """``key`` without the ``module.`` prefixes of (nested) DataParallel / DistributedDataParallel wrappers."""
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def _attention_spec(state_dict: Mapping[str, Tensor], prefix: str) -> AttentionSpec:
    """The attention stored under ``prefix`` (e.g. ``"layer1.0.eca."``), read from its tensor shapes."""
    eca_weight = state_dict.get(prefix + "conv.weight")
    if eca_weight is not None and eca_weight.dim() == 3:
        return partial(ECA, kernel_size=eca_weight.shape[-1], shared=eca_weight.shape[0] == 1)
    fc1 = state_dict.get(prefix + "fc1.weight")
    if fc1 is None:
        return None
    mlp = _mlp_options(channels=fc1.shape[1], hidden=fc1.shape[0])
    if prefix + "spatial.weight" in state_dict:
        return partial(CBAM, spatial_kernel_size=state_dict[prefix + "spatial.weight"].shape[-1], **mlp)
    return partial(SE, bias=prefix + "fc1.bias" in state_dict, **mlp)


def _mlp_options(channels: int, hidden: int) -> dict[str, int]:
    """``reduction`` (and ``min_channels`` where needed) giving exactly ``hidden`` = max(min_channels, C // r)."""
    reduction = max(1, channels // hidden)  # a hidden width above C comes from min_channels alone
    if channels // reduction == hidden:
        return {"reduction": reduction}
    # A width no reduction gives (raised by min_channels): a larger reduction with min_channels = hidden.
    return {"reduction": reduction + 1, "min_channels": hidden}


def _same_spec(a: AttentionSpec, b: AttentionSpec) -> bool:
    if isinstance(a, partial) and isinstance(b, partial):
        return a.func is b.func and a.keywords == b.keywords
    return a == b


def _infer_resnet(state_dict: Mapping[str, Tensor]) -> ResNet:
    block = Bottleneck if "layer1.0.conv3.weight" in state_dict else BasicBlock
    layers, stage_attention = [], []
    for stage in range(1, 5):
        count = 0
        while f"layer{stage}.{count}.conv1.weight" in state_dict:
            count += 1
        if count == 0:
            raise ValueError(f"state dict looks like a ResNet but has no blocks in layer{stage}")
        specs = [
            _attention_spec(state_dict, f"layer{stage}.{n}.eca.")
            or _attention_spec(state_dict, f"layer{stage}.{n}.attention.")
            for n in range(count)
        ]
        if not all(_same_spec(spec, specs[0]) for spec in specs):
            raise ValueError(
                f"the blocks of layer{stage} use different attention settings ({specs}); build that model "
                f"yourself and pass it as model="
            )
        layers.append(count)
        stage_attention.append(specs[0])
    conv1 = state_dict["conv1.weight"]
    return ResNet(
        block,
        layers,
        num_classes=state_dict["fc.weight"].shape[0],
        in_chans=conv1.shape[1],
        width=conv1.shape[0],
        small_input=conv1.shape[-1] == 3,
        attention=stage_attention,
    )


def _infer_mobilenet(state_dict: Mapping[str, Tensor]) -> MobileNetV2:
    attention = []
    for index in range(1, NUM_BLOCKS + 1):
        position = 3 if index == 1 else 4  # the first block has no expansion conv
        attention.append(_attention_spec(state_dict, f"features.{index}.conv.{position}."))
    stem = state_dict["features.0.0.weight"]
    last_block_width = state_dict[f"features.{NUM_BLOCKS + 1}.0.weight"].shape[1]
    return MobileNetV2(
        num_classes=state_dict["classifier.1.weight"].shape[0],
        in_chans=stem.shape[1],
        width_mult=last_block_width / 320,
        attention=attention,
    )


def infer_model(state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Builds the (randomly initialised) network a state dict belongs to, from its keys and shapes.

    Recognises ResNets (basic or bottleneck blocks, any block counts, stem width, small-input stem)
    and MobileNetV2 (width multiplier), each with per-stage (ResNet) or per-block (MobileNetV2) ECA
    kernel sizes, SE or CBAM as stored, plus ``num_classes`` and ``in_chans``.

    Args:
        state_dict: a bare state dict (see :func:`read_state_dict`).

    Raises:
        ValueError: the keys match no supported architecture.

    Example:
        >>> from ecanet.models.resnet import eca_resnet18
        >>> net = infer_model(eca_resnet18(width=8, kernel_sizes=(1, 3, 5, 9)).state_dict())
        >>> [stage[0].eca.kernel_size for stage in (net.layer1, net.layer2, net.layer3, net.layer4)]
        [1, 3, 5, 9]
    """
    try:
        if "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict:
            return _infer_resnet(state_dict)
        if "features.0.0.weight" in state_dict and "classifier.1.weight" in state_dict:
            return _infer_mobilenet(state_dict)
    except KeyError as error:
        raise ValueError(f"state dict lacks {error} needed to infer its architecture") from error
    keys = list(state_dict)[:_SHOWN]
    raise ValueError(
        f"cannot infer the architecture: the keys ({keys}, ...) match neither a ResNet (conv1, layer1..4, fc) "
        f"nor a MobileNetV2 (features, classifier); build the model yourself and pass it as model="
    )


def _attention_prefixes(model: nn.Module) -> list[str]:
    return [f"{name}." for name, module in model.named_modules() if isinstance(module, _ATTENTION_TYPES)]


def load_matching_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> StateDictDiff:
    """Loads ``state_dict`` into ``model`` if it fits, allowing only attention weights to be absent.

    The start of every "add ECA and fine-tune" workflow: torchvision's plain ResNet or MobileNetV2
    weights load into the matching ECA model, and only the ECA kernels keep their initialisation;
    they are listed in the returned diff (``new_attention``) and in a warning.

    Args:
        model: the network to fill.
        state_dict: a bare state dict (``module.`` prefixes already stripped).

    Returns:
        The :class:`StateDictDiff` (empty, or only ``new_attention`` keys missing).

    Raises:
        ValueError: any other missing, unexpected or mismatched key; the message lists them and
            the model is left unchanged.

    Example:
        >>> from ecanet.models.resnet import eca_resnet18, resnet18
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     diff = load_matching_state_dict(eca_resnet18(width=8), resnet18(width=8).state_dict())
        >>> len(diff.new_attention), diff.new_attention[0]
        (8, 'layer1.0.eca.conv.weight')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    expected = model.state_dict()
    prefixes = tuple(_attention_prefixes(model))
    missing = [key for key in expected if key not in state_dict and not key.endswith("num_batches_tracked")]
    diff = StateDictDiff(
        missing=missing,
        unexpected=[key for key in state_dict if key not in expected],
        mismatched=[
            (key, list(value.shape), list(expected[key].shape))
            for key, value in state_dict.items()
            if key in expected and value.shape != expected[key].shape
        ],
        new_attention=[key for key in missing if prefixes and key.startswith(prefixes)],
    )
    if not diff.loadable:
        raise ValueError(f"the state dict does not fit {type(model).__name__}:\n{diff.describe()}")
    model.load_state_dict(state_dict, strict=False)
    if diff.new_attention:
        warnings.warn(
            f"{len(diff.new_attention)} attention tensors are not in the state dict and keep their fresh "
            f"initialisation (new weights to train): {', '.join(diff.new_attention[:_SHOWN])}"
            + (" ..." if len(diff.new_attention) > _SHOWN else ""),
            UserWarning,
            stacklevel=2,
        )
    return diff


def load_official_checkpoint(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Loads an official ECA-Net checkpoint (or any ResNet/MobileNetV2 state dict) into a model.

    Without ``model``, the architecture, block counts and every per-stage (per-block for
    MobileNetV2) ECA kernel size are read from the tensor shapes, so
    ``load_official_checkpoint("eca_resnet50_k3557.pth.tar")`` needs no ``k`` argument. With
    ``model``, plain torchvision weights may load into an ECA/SE/CBAM model: only the attention
    weights are then new, and a warning lists them (see :func:`load_matching_state_dict`).

    Args:
        path: a ``.pth``/``.pth.tar`` file: a bare state dict, or the official container
            (``state_dict`` with ``module.`` prefixes). Read with ``weights_only=True``.
        model: the network to fill; ``None`` builds the matching one.

    Returns:
        The model with the weights loaded (in training mode, as built).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint, is truncated, holds pickled objects, or does not fit
            the model (the message lists missing, unexpected and mismatched keys).

    Example:
        >>> import tempfile, torch
        >>> from ecanet.models.resnet import eca_resnet18
        >>> source = eca_resnet18(width=8, num_classes=10, kernel_sizes=(3, 3, 5, 7))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"state_dict": source.state_dict()}, f"{tmp}/eca.pth.tar")
        ...     net = load_official_checkpoint(f"{tmp}/eca.pth.tar")
        >>> net.layer3[1].eca.kernel_size, net.fc.out_features
        (5, 10)
    """
    state_dict = read_state_dict(path)
    if model is None:
        model = infer_model(state_dict)
    load_matching_state_dict(model, state_dict)
    return model
