"""``explain_attention``: what a network's attention layers do on labelled data, layer by layer."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence, Sized

import torch
from torch import Tensor, nn

from ecanet.experiments.statistics import PairedDifference, paired_difference
from ecanet.explain.fixed_gates import fixed_gates
from ecanet.explain.gates import ATTENTION_LAYERS, attention_layers, channel_gate, gate_from_output, gate_replaceable
from ecanet.explain.report import AttentionReport, LayerExplanation
from ecanet.explain.statistics import GateStatistics
from ecanet.layers import ECA
from ecanet.modes import evaluation_mode

__all__ = ["explain_attention"]

_PAIRED_OVER_IMAGES = "two-sided paired t interval over images"
"""How explain's changes are tested: each image with and without the frozen gate (not seeds, as in compare)."""

Batches = Iterable[tuple[Tensor, Tensor]]


def explain_attention(
    model: nn.Module,
    batches: Batches,
    classes: Sequence[str],
    *,
    freeze: bool = True,
    layers: Sequence[str] | None = None,
    name: str | None = None,
    progress: bool = False,
) -> AttentionReport:
    """Explains every channel attention layer of ``model`` on labelled images: ecanet's ECA, SE and
    CBAM, torchvision's and timm's squeeze-and-excitation and ECA modules, or the layers named.

    One pass over ``batches`` records each layer's channel gates per class (ecanet's layers compute
    them from their input with :func:`channel_gate`, the others are read from their input and
    output with :func:`gate_from_output`):
    their mean, how much they change from image to image, and how much of that change the class
    explains (in the spirit of the SE paper's per-class excitation plots). With ``freeze``, one
    more pass per layer runs it with its gate frozen at its per-channel mean (:func:`fixed_gates`),
    and a last one freezes all of them: the loss in accuracy is what the network gains from
    attention that depends on the input, beyond a fixed rescaling of the channels. The changes in
    top-1 and loss come with paired 95% t intervals over the images (each image is seen with and
    without the frozen gate). ECA layers also report their learned kernel.

    The network runs in eval mode without gradients, on the device of its parameters; its mode
    is restored afterwards.

    Args:
        model: a classifier with attention layers.
        batches: ``(images, labels)`` batches, re-iterable (a DataLoader or a list) when ``freeze``.
        classes: class names, index = label.
        freeze: measure the accuracy with frozen gates (one pass per layer but CBAM, and one more).
        layers: qualified names of the modules to explain, instead of those found: any module whose
            output is its input times a gate per channel (checked on every batch); each once, none empty.
        name: the network's name in the report (default: its class name).
        progress: show a tqdm progress bar.

    Returns:
        An :class:`AttentionReport`.

    Example:
        >>> from ecanet import create_model
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = create_model("eca_resnet18", num_classes=3, in_chans=1, small_input=True, width=8)
        >>> batches = [(torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2]))]
        >>> report = explain_attention(model, batches, ["a", "b", "c"])
        >>> [layer.name for layer in report.layers][:2], report.images
        (['layer1.0.eca', 'layer1.1.eca'], 6)
    """
    found = attention_layers(model) if layers is None else _named_modules(model, layers)
    if not found:
        raise ValueError(f"{type(model).__name__} has no channel attention layer to explain (ECA, SE, CBAM, ...)")
    if freeze and isinstance(batches, Iterator):
        raise ValueError("batches must be re-iterable (a DataLoader or a list) when freeze=True, got an iterator")
    replaceable = [(layer_name, module) for layer_name, module in found if gate_replaceable(module)]
    freeze = freeze and bool(replaceable)
    passes = _Passes(model, batches, 1 + (len(replaceable) + 1 if freeze else 0), progress)
    frozen: dict[nn.Module, _Outcomes] = {}
    try:
        with evaluation_mode(model), torch.no_grad():
            with _recorded_gates(found, len(classes)) as (statistics, labels_of_batch):
                outcomes = passes.run("gates", labels_of_batch)
            for layer_name, module in found:
                seen = statistics[module].count if module in statistics else 0
                if seen != outcomes.count:
                    raise ValueError(
                        f"explain needs every attention layer to run once per image: {layer_name} ran for "
                        f"{seen} of {outcomes.count} images"
                    )
            if freeze:
                # A channel whose gate was never known is zero throughout: any gate leaves it so.
                means = {module: statistics[module].mean.nan_to_num(0.0) for _, module in replaceable}
                for layer_name, module in replaceable:
                    with fixed_gates({module: means[module]}):
                        frozen[module] = passes.run(f"frozen {layer_name}")
                with fixed_gates(means):
                    all_frozen = passes.run("all frozen")
    finally:
        passes.close()
    explanations = tuple(
        _explanation(layer_name, module, statistics[module], outcomes, frozen.get(module))
        for layer_name, module in found
    )
    all_top1_change, all_loss_change = outcomes.changes(all_frozen) if freeze else (None, None)
    return AttentionReport(
        model=name or type(model).__name__,
        classes=tuple(classes),
        images=outcomes.count,
        accuracy=outcomes.accuracy,
        loss=outcomes.loss,
        layers=explanations,
        chance_class_share=statistics[found[0][1]].chance_class_share,
        all_frozen_top1_change=all_top1_change,
        all_frozen_loss_change=all_loss_change,
    )


def _named_modules(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for each name, or a ValueError naming the first that ``model`` lacks, an
    empty name (the whole network) or a name given twice (its gates would be counted twice)."""
    if not names or "" in names:
        raise ValueError(f"layers must name modules of {type(model).__name__}, got {list(names)!r}")
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"layers names {repeated[0]!r} more than once")
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ValueError(f"{type(model).__name__} has no module named {missing[0]!r}")
    return [(name, modules[name]) for name in names]


@contextlib.contextmanager
def _recorded_gates(
    layers: list[tuple[str, nn.Module]], num_classes: int
) -> Iterator[tuple[dict[nn.Module, GateStatistics], list[Tensor]]]:
    """Records every layer's gates into its statistics (made at its first call) while the block
    runs; the caller puts the labels of the batch about to run into the yielded list."""
    statistics: dict[nn.Module, GateStatistics] = {}
    labels: list[Tensor] = []

    def add(module: nn.Module, gates: Tensor) -> None:
        if module not in statistics:
            statistics[module] = GateStatistics(gates.shape[1], num_classes)
        statistics[module].update(gates, labels[0])

    def from_input(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        add(module, channel_gate(module, args[0]))

    def from_output(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        try:
            gates = gate_from_output(args[0], output)
        except ValueError as error:
            raise ValueError(f"{names[module]} cannot be explained as a channel gate: {error}") from None
        add(module, gates)

    names = {module: layer_name for layer_name, module in layers}
    handles = [
        module.register_forward_pre_hook(from_input)
        if isinstance(module, ATTENTION_LAYERS)
        else module.register_forward_hook(from_output)
        for _, module in layers
    ]
    try:
        yield statistics, labels
    finally:
        for handle in handles:
            handle.remove()


@dataclasses.dataclass(frozen=True)
class _Outcomes:
    """Per image of one pass: whether the top-1 prediction was right, and the cross-entropy."""

    correct: Tensor
    losses: Tensor

    @property
    def count(self) -> int:
        return self.correct.shape[0]

    @property
    def accuracy(self) -> float:
        return 100.0 * float(self.correct.double().mean())

    @property
    def loss(self) -> float:
        return float(self.losses.mean())

    def changes(self, other: _Outcomes) -> tuple[PairedDifference, PairedDifference]:
        """``other``'s top-1 (percentage points) and loss minus these, with paired intervals over the images."""
        top1 = _paired_over_images(100.0 * other.correct.double(), 100.0 * self.correct.double())
        return top1, _paired_over_images(other.losses, self.losses)


def _paired_over_images(candidate: Tensor, baseline: Tensor) -> PairedDifference:
    return dataclasses.replace(paired_difference(candidate.tolist(), baseline.tolist()), test=_PAIRED_OVER_IMAGES)


class _Passes:
    """Passes of the network over the batches (top-1 %, mean cross-entropy, images), behind one
    progress bar for all of them when ``progress`` (tqdm comes with the ``train`` extra)."""

    def __init__(self, model: nn.Module, batches: Batches, passes: int, progress: bool) -> None:
        self.model, self.batches = model, batches
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            total = passes * len(batches) if isinstance(batches, Sized) else None
            self.bar = tqdm(total=total, unit="batch", desc="explain")

    def run(self, description: str, labels_of_batch: list[Tensor] | None = None) -> _Outcomes:
        """One pass; ``labels_of_batch`` receives each batch's labels before the network runs on it."""
        if self.bar is not None:
            self.bar.set_description(description)
        correct, losses = [], []
        for images, labels in self.batches:
            labels = labels.to(self.device)
            if labels_of_batch is not None:
                labels_of_batch[:] = [labels]
            logits = self.model(images.to(self.device)).double()
            correct.append((logits.argmax(1) == labels).cpu())
            losses.append(nn.functional.cross_entropy(logits, labels, reduction="none").cpu())
            if self.bar is not None:
                self.bar.update()
        if not correct or not sum(len(batch) for batch in correct):
            raise ValueError("batches yielded no images")
        return _Outcomes(torch.cat(correct), torch.cat(losses))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _explanation(
    name: str, module: nn.Module, statistics: GateStatistics, outcomes: _Outcomes, frozen: _Outcomes | None
) -> LayerExplanation:
    kernel = ()
    conv = getattr(module, "conv", None)  # ECA's kernel, or a Conv1d(1, 1, k) as in timm's ECA
    if isinstance(module, ECA) or (isinstance(conv, nn.Conv1d) and conv.weight.shape[:2] == (1, 1)):
        weight = conv.weight.detach()  # [rows, 1, k]
        kernel = tuple(tuple(row) for row in weight[:, 0].double().tolist())
    top1_change, loss_change = outcomes.changes(frozen) if frozen is not None else (None, None)
    return LayerExplanation(
        name=name,
        kind=type(module).__name__,
        channels=statistics.channels,
        kernel=kernel,
        mean_gate=float(statistics.mean.nanmean()),
        spread=statistics.spread,
        class_share=statistics.class_share,
        class_means=tuple(tuple(row) for row in statistics.class_means.tolist()),
        frozen_top1_change=top1_change,
        frozen_loss_change=loss_change,
    )
