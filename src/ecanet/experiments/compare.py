"""Compare attention choices on one backbone: same data, budget and seeds; accuracy and cost.

:func:`run_compare` trains every ``(attention, seed)`` pair with :func:`ecanet.training.train`
into ``run_dir/<attention>-seed<k>/``, seed by seed so that an interrupted compare already holds
complete pairs, then measures every variant's inference cost side by side and writes
``results.csv``, ``report.md`` and the plots into ``run_dir``. Running it again reuses every
finished run (the trainer returns it at once) and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecanet.data import DatasetInfo, load_dataset
from ecanet.dependencies import require
from ecanet.experiments.cost import measure_costs
from ecanet.experiments.plots import plot_accuracy_curves, plot_accuracy_vs_latency, plot_eca_kernel_sizes
from ecanet.experiments.report import summary_rows, write_csv, write_markdown
from ecanet.experiments.results import CompareResult, VariantResult
from ecanet.experiments.variants import build_foreign_model, eca_layers, foreign_source, validate_variants
from ecanet.training import TrainConfig, TrainResult, train
from ecanet.training.config import RESUMABLE_CHANGES
from ecanet.training.files import write_atomically
from ecanet.training.trainer import LAST_CHECKPOINT, TRAINING_PACKAGES

__all__ = ["CompareConfig", "run_compare", "write_outputs"]

SETTINGS_FILE = "compare.json"
# Fields set per run, and those the trainer lets a resumed run change: they may differ between invocations.
# Except epochs: the learning-rate schedule spans them, so runs of other epochs are not comparable.
_NOT_SETTINGS = (RESUMABLE_CHANGES - {"epochs"}) | {"model", "seed"}


@dataclass
class CompareConfig:
    """What to compare and how.

    Attributes:
        model: registered ecanet model (any attention choice), or ``"torchvision:NAME"`` /
            ``"timm:NAME"`` (``none`` and ``eca`` via :func:`ecanet.add_eca`).
        attentions: attention choices, the first one is the baseline of every difference.
        seeds: number of seeds; run ``k`` uses seed ``training.seed + k`` for every variant.
        training: template for every run. Its ``model_kwargs`` go to the backbone (e.g.
            ``{"width": 16}``); ``model``, ``seed`` and ``run_dir`` are set per run.
        run_dir: directory of the compare; each run goes to ``run_dir/<attention>-seed<k>``.
        latency_batch_size: batch size of the timed inference pass.
        latency_rounds: measured rounds of the side-by-side timing.
        confidence: level of the paired confidence intervals.
        command: command line quoted in the report (set by the CLI).

    Example:
        >>> config = CompareConfig(attentions=("none", "eca"), seeds=1)
        >>> config.model, config.training.data
        ('resnet18', 'fashion-mnist')
    """

    model: str = "resnet18"
    attentions: tuple[str, ...] = ("none", "eca", "se")
    seeds: int = 2
    training: TrainConfig = field(default_factory=TrainConfig)
    run_dir: str | Path = "runs/compare"
    latency_batch_size: int = 32
    latency_rounds: int = 15
    confidence: float = 0.95
    command: str | None = None


def _check_config(config: CompareConfig) -> None:
    for name in ("seeds", "latency_batch_size", "latency_rounds"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if "attention" in config.training.model_kwargs:
        raise ValueError(
            "training.model_kwargs must not hold 'attention': the compare sets it per variant from attentions, "
            f"got model_kwargs={config.training.model_kwargs!r}"
        )
    if not (isinstance(config.confidence, float) and 0.0 < config.confidence < 1.0):
        raise ValueError(f"confidence must be a float strictly between 0 and 1, got {config.confidence!r}")
    validate_variants(config.model, tuple(config.attentions))
    config.training.validate()


def _settings(config: CompareConfig) -> dict[str, Any]:
    training = {k: v for k, v in dataclasses.asdict(config.training).items() if k not in _NOT_SETTINGS}
    training["lr"] = config.training.learning_rate  # None stands for the optimiser's default
    return {"model": config.model, "training": json.loads(json.dumps(training, default=str))}


def _check_run_dir(run_dir: Path, settings: dict[str, Any]) -> None:
    """Refuses to mix runs trained under different settings in one compare directory.

    The settings bind once a run holds a checkpoint: a compare that failed before that (a
    configuration the trainer refused, say) leaves nothing to mix, so the next one replaces them.
    """
    path = run_dir / SETTINGS_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous == settings:
            return
        if any(run_dir.glob(f"*/{LAST_CHECKPOINT}")):
            # Both sides' keys: a compare.json from an older ecanet may hold fields that are no longer settings.
            keys = previous["training"].keys() | settings["training"].keys()
            changed = {
                key: (previous["training"].get(key), settings["training"].get(key))
                for key in sorted(keys)
                if previous["training"].get(key) != settings["training"].get(key)
            }
            if previous["model"] != settings["model"]:
                changed["model"] = (previous["model"], settings["model"])
            raise ValueError(
                f"run_dir {str(run_dir)!r} holds a compare with other settings (old, new): {changed}; its runs "
                "cannot be reused. Choose another run_dir or delete that one."
            )
    write_atomically(path, (json.dumps(settings, indent=2) + "\n").encode())


def _train_variant(config: CompareConfig, attention: str, seed: int, info: DatasetInfo) -> TrainResult:
    run_config = dataclasses.replace(
        config.training,
        model=config.model,
        seed=seed,
        run_dir=str(Path(config.run_dir) / f"{attention}-seed{seed}"),
    )
    if foreign_source(config.model) is None:
        run_config.model_kwargs = {**config.training.model_kwargs, "attention": attention}
        return train(run_config)
    torch.manual_seed(seed)  # the same initial weights for a run and its resumption
    model = build_foreign_model(
        config.model,
        attention,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        model_kwargs=config.training.model_kwargs,
    )
    return train(run_config, model=model)


def run_compare(config: CompareConfig) -> CompareResult:
    """Trains every attention variant with every seed, measures their cost and writes the report.

    Writes into ``config.run_dir``: one trainer run per ``(attention, seed)``, ``compare.json``
    (the shared settings; a later compare into the same directory must match them),
    ``results.csv``, ``report.md``, ``accuracy_curves.png``, ``accuracy_vs_latency.png`` and,
    when a variant has ECA, ``eca_kernel_sizes.png``.

    Args:
        config: what to compare.

    Returns:
        The :class:`CompareResult` (print ``format_table(summary_rows(result))`` for the table).

    Example::

        from ecanet.training import TrainConfig
        result = run_compare(CompareConfig(attentions=("none", "eca"), training=TrainConfig(epochs=2)))
        print(format_table(summary_rows(result)))
    """
    _check_config(config)
    require("training", *TRAINING_PACKAGES)  # before compare.json is written
    training = config.training
    # A missing dataset fails here, before anything is written.
    _, info = load_dataset(training.data, training.data_dir, train=False, augment=False, image_size=training.image_size)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_dir(run_dir, _settings(config))
    seeds = [training.seed + k for k in range(config.seeds)]
    attentions = list(config.attentions)

    histories: dict[str, list[list[dict[str, Any]]]] = {attention: [] for attention in attentions}
    models: dict[str, nn.Module] = {}
    total = len(seeds) * len(attentions)
    for seed_index, seed in enumerate(seeds):
        for attention_index, attention in enumerate(attentions):
            if training.progress:
                number = seed_index * len(attentions) + attention_index + 1
                print(f"compare [{number}/{total}] {config.model} attention={attention} seed={seed}", flush=True)
            result = _train_variant(config, attention, seed, info)
            histories[attention].append(list(result.history))
            # One trained model per variant is enough for cost measurements; keep no more in memory.
            models.setdefault(attention, result.model)

    costs = measure_costs(
        models,
        (info.in_chans, info.image_size, info.image_size),
        info.num_classes,
        batch_size=config.latency_batch_size,
        train_batch_size=training.batch_size,
        rounds=config.latency_rounds,
    )
    variants = tuple(
        VariantResult(
            attention=attention,
            seeds=tuple(seeds),
            histories=tuple(histories[attention]),
            params=costs[attention].params,
            flops=costs[attention].flops,
            latency=costs[attention].latency,
            latency_batch_size=config.latency_batch_size,
            train_step=costs[attention].train_step,
            train_batch_size=training.batch_size,
            eca_layers=eca_layers(models[attention]),
        )
        for attention in attentions
    )
    result = CompareResult(
        run_dir=run_dir,
        model=config.model,
        data=training.data,
        num_classes=info.num_classes,
        input_size=(1, info.in_chans, info.image_size, info.image_size),
        epochs=_epochs(variants),
        confidence=config.confidence,
        variants=variants,
        settings=_report_settings(config),
    )
    write_outputs(result, command=config.command)
    return result


def _epochs(variants: Sequence[VariantResult]) -> int:
    return max(len(history) for variant in variants for history in variant.histories)


def _report_settings(config: CompareConfig) -> dict[str, Any]:
    training = _settings(config)["training"]
    return {key: value for key, value in training.items() if value not in (None, {}, "")}


def write_outputs(result: CompareResult, command: str | None = None) -> list[Path]:
    """Writes ``results.csv``, the plots and ``report.md`` of ``result`` into ``result.run_dir``.

    Args:
        result: a finished compare.
        command: command line quoted in the report.

    Returns:
        The written files.

    Example::

        write_outputs(run_compare(CompareConfig()))
    """
    rows = summary_rows(result)
    run_dir = result.run_dir
    written = [
        write_csv(run_dir / "results.csv", rows),
        plot_accuracy_curves(result, run_dir / "accuracy_curves.png"),
        plot_accuracy_vs_latency(result, run_dir / "accuracy_vs_latency.png"),
    ]
    with_eca = [variant for variant in result.variants if variant.eca_layers]
    if with_eca:
        title = f"{result.model} + {with_eca[0].attention}: kernel size per ECA layer"
        written.append(plot_eca_kernel_sizes(with_eca[0].eca_layers, run_dir / "eca_kernel_sizes.png", title))
    written.append(write_markdown(run_dir / "report.md", result, rows, [path.name for path in written[1:]], command))
    return written
