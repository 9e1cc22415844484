"""Named compare settings: ``demo`` (minutes on a laptop CPU) and ``full`` (a real answer, hours or a GPU).

``demo`` trains a narrow (width 16) small-input ResNet-18 on the embedded Fashion-MNIST subset,
without, with ECA and with SE, two seeds each: 5 epochs of 36 steps of 128 images (about two
passes over the 12,000 training images) per run, sized from a measured ~750 training images/s on
two CPU cores to finish in about four minutes (``make demo``). It shows the whole pipeline and
the cost side of the answer (parameters, FLOPs, inference and training time); with two seeds and
a short budget its accuracy differences are mostly seed noise, and the report's intervals say so.

``full`` trains a width-32 small-input ResNet-18 on all 60,000 Fashion-MNIST training images
(10,000 test images) for 10 epochs, with all four attention choices and three seeds: minutes on
a GPU, most of a day on two CPU cores.
"""

from __future__ import annotations

import dataclasses

from ecanet.experiments.compare import CompareConfig
from ecanet.training import TrainConfig

__all__ = ["PRESETS", "compare_preset", "with_model"]

PRESETS = ("demo", "full")


def compare_preset(name: str = "demo") -> CompareConfig:
    """The :class:`CompareConfig` of a named preset (a fresh object; change it freely).

    Args:
        name: ``"demo"`` or ``"full"``.

    Returns:
        The preset's configuration.

    Example:
        >>> config = compare_preset("demo")
        >>> config.attentions, config.seeds, config.training.model_kwargs
        (('none', 'eca', 'se'), 2, {'width': 16})
    """
    if name == "demo":
        training = TrainConfig(
            data="fashion-mnist",
            model_kwargs={"width": 16},
            epochs=5,
            batch_size=128,
            max_steps_per_epoch=36,
            optimizer="sgd",
            lr=0.1,
            weight_decay=5e-4,
            schedule="cosine",
            warmup_epochs=0.5,
        )
        return CompareConfig("resnet18", ("none", "eca", "se"), 2, training, run_dir="runs/compare-demo")
    if name == "full":
        training = TrainConfig(
            data="fashion-mnist-full",
            model_kwargs={"width": 32},
            epochs=10,
            batch_size=128,
            optimizer="sgd",
            lr=0.1,
            weight_decay=5e-4,
            schedule="cosine",
            warmup_epochs=1.0,
        )
        return CompareConfig("resnet18", ("none", "eca", "se", "cbam"), 3, training, run_dir="runs/compare-full")
    raise ValueError(f"preset must be one of {list(PRESETS)}, got {name!r}")


def with_model(config: CompareConfig, model: str) -> CompareConfig:
    """``config`` for another backbone: the preset's ``width`` is kept only for ecanet ResNets.

    Args:
        config: a preset's configuration.
        model: the backbone to compare instead.

    Returns:
        A new configuration.

    Example:
        >>> with_model(compare_preset("demo"), "torchvision:resnet18").training.model_kwargs
        {}
    """
    kwargs = dict(config.training.model_kwargs)
    if ":" in model or "resnet" not in model:
        kwargs.pop("width", None)
    return dataclasses.replace(config, model=model, training=dataclasses.replace(config.training, model_kwargs=kwargs))
