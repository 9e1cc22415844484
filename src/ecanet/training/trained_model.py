"""A network ``ecanet train`` wrote, back from its checkpoint: rebuilt from the saved configuration and loaded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from ecanet.data import DatasetInfo
from ecanet.training.checkpoint import load_checkpoint
from ecanet.training.config import TrainConfig
from ecanet.training.trainer import build_model

__all__ = ["TrainedModel", "load_trained_model"]

_REQUIRED_KEYS = ("config", "dataset", "model", "epoch")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained network and what its checkpoint says about it.

    Attributes:
        model: the network in eval mode, on the CPU.
        info: the dataset it was trained on (classes, input channels, image size, normalisation).
        config: the run's configuration.
        epoch: finished epochs.
    """

    model: nn.Module
    info: DatasetInfo
    config: TrainConfig
    epoch: int


def load_trained_model(path: str | Path, *, trust_model_code: bool = False) -> TrainedModel:
    """Rebuilds the network of a checkpoint written by :func:`ecanet.train` (``last.pt`` or ``best.pt``).

    The file is read with ``weights_only=True``; the network is built from the saved configuration
    (:func:`ecanet.training.build_model`) and loads the saved weights strictly. A configuration
    naming its network ``"package.module:function"`` would import that module and call that function
    with the checkpoint's keyword arguments, which is running code the file chooses: such a checkpoint
    is refused unless ``trust_model_code`` is set. Registered names (:func:`ecanet.list_models`) load.

    Args:
        path: the checkpoint file.
        trust_model_code: build a ``"package.module:function"`` network by importing and calling it;
            only for checkpoints from a source you trust as much as the code itself.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a checkpoint of ``ecanet train``, it names its network by a
            function to import without ``trust_model_code``, or its weights do not fit the network
            its configuration names.

    Example:
        >>> import tempfile, pathlib
        >>> from ecanet.training.checkpoint import save_checkpoint
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "weights.pt"
        >>> save_checkpoint({"model": {}}, path)
        >>> load_trained_model(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... is not a checkpoint written by ecanet train: it lacks 'config', 'dataset', 'epoch'
    """
    checkpoint = load_checkpoint(path)
    missing = [key for key in _REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        lacking = ", ".join(map(repr, sorted(missing)))
        raise ValueError(f"{str(path)!r} is not a checkpoint written by ecanet train: it lacks {lacking}")
    config = _config_of(path, checkpoint["config"])
    if ":" in config.model and not trust_model_code:
        raise ValueError(
            f"{str(path)!r} builds its network by importing and calling {config.model!r}, which would run code "
            "the file chooses; load it with trust_model_code=True (--trust-model-code) only if you trust its source"
        )
    info = _dataset_of(path, checkpoint["dataset"])
    model = build_model(config, info)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # torch lists every mismatching tensor: name the first
        problems = [line.strip() for line in str(error).splitlines()[1:] if line.strip()] or [str(error)]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{str(path)!r}: the weights do not fit {config.model!r}: {problems[0]}{more}") from error
    return TrainedModel(model.eval(), info, config, int(checkpoint["epoch"]))


def _config_of(path: str | Path, values: object) -> TrainConfig:
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r}: its 'config' is a {type(values).__name__}, not the dict ecanet train writes")
    try:
        config = TrainConfig.from_dict(values)
        config.validate()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{str(path)!r}: its 'config' is not a valid TrainConfig: {error}") from error
    return config


def _dataset_of(path: str | Path, values: object) -> DatasetInfo:
    fields = [field.name for field in dataclasses.fields(DatasetInfo)]
    if not isinstance(values, dict) or sorted(values) != sorted(fields):
        described = sorted(values) if isinstance(values, dict) else f"a {type(values).__name__}"
        raise ValueError(f"{str(path)!r}: its 'dataset' should have the fields {fields}, got {described}")
    return DatasetInfo(**values)
