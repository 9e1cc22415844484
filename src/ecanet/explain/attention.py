"""``explain_attention``: what a network's attention layers do on labelled data, layer by layer."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence, Sized

import torch
from torch import Tensor, nn

from ecanet.experiments.statistics import PairedDifference, paired_difference
from ecanet.explain.fixed_gates import fixed_gates
from ecanet.explain.gates import attention_layers, channel_gate, gate_replaceable
from ecanet.explain.report import AttentionReport, LayerExplanation
from ecanet.explain.statistics import GateStatistics
from ecanet.layers import ECA

__all__ = ["explain_attention"]

Batches = Iterable[tuple[Tensor, Tensor]]


def explain_attention(
    model: nn.Module,
    batches: Batches,
    classes: Sequence[str],
    *,
    freeze: bool = True,
    name: str | None = None,
    progress: bool = False,
) -> AttentionReport:
    """Explains every ECA, SE and CBAM layer of ``model`` on labelled images.

    One pass over ``batches`` records each layer's channel gates (:func:`channel_gate`) per class:
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
        freeze: measure the accuracy with frozen gates (one pass per ECA or SE layer, and one more).
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
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no ECA, SE or CBAM layer to explain")
    if freeze and isinstance(batches, Iterator):
        raise ValueError("batches must be re-iterable (a DataLoader or a list) when freeze=True, got an iterator")
    statistics = {module: GateStatistics(_channels(module), len(classes)) for _, module in layers}
    replaceable = [(layer_name, module) for layer_name, module in layers if gate_replaceable(module)]
    freeze = freeze and bool(replaceable)
    passes = _Passes(model, batches, 1 + (len(replaceable) + 1 if freeze else 0), progress)
    frozen: dict[nn.Module, _Outcomes] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            with _recorded_gates(statistics) as labels_of_batch:
                outcomes = passes.run("gates", labels_of_batch)
            for layer_name, module in layers:
                if statistics[module].count != outcomes.count:
                    raise ValueError(
                        f"explain needs every attention layer to run once per image: {layer_name} ran for "
                        f"{statistics[module].count} of {outcomes.count} images"
                    )
            means = {module: statistics[module].mean for _, module in replaceable}
            if freeze:
                for layer_name, module in replaceable:
                    with fixed_gates({module: means[module]}):
                        frozen[module] = passes.run(f"frozen {layer_name}")
                with fixed_gates(means):
                    all_frozen = passes.run("all frozen")
    finally:
        model.train(was_training)
        passes.close()
    explanations = tuple(
        _explanation(layer_name, module, statistics[module], outcomes, frozen.get(module))
        for layer_name, module in layers
    )
    all_top1_change, all_loss_change = outcomes.changes(all_frozen) if freeze else (None, None)
    return AttentionReport(
        model=name or type(model).__name__,
        classes=tuple(classes),
        images=outcomes.count,
        accuracy=outcomes.accuracy,
        loss=outcomes.loss,
        layers=explanations,
        chance_class_share=statistics[layers[0][1]].chance_class_share,
        all_frozen_top1_change=all_top1_change,
        all_frozen_loss_change=all_loss_change,
    )


def _channels(module: nn.Module) -> int:
    channels = getattr(module, "channels", None)
    if channels is None:
        raise ValueError(f"explain needs attention layers built with their channel count, got {module!r}")
    return channels


@contextlib.contextmanager
def _recorded_gates(statistics: dict[nn.Module, GateStatistics]) -> Iterator[list[Tensor]]:
    """Records every layer's gate, from its input, into its statistics while the block runs; the
    caller puts the labels of the batch about to run into the yielded list."""
    labels: list[Tensor] = []

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        statistics[module].update(channel_gate(module, args[0]), labels[0])

    handles = [module.register_forward_pre_hook(record) for module in statistics]
    try:
        yield labels
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
        top1 = paired_difference((100.0 * other.correct.double()).tolist(), (100.0 * self.correct.double()).tolist())
        return top1, paired_difference(other.losses.tolist(), self.losses.tolist())


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
    if isinstance(module, ECA):
        weight = module.conv.weight.detach()  # [rows, 1, k]
        kernel = tuple(tuple(row) for row in weight[:, 0].double().tolist())
    top1_change, loss_change = outcomes.changes(frozen) if frozen is not None else (None, None)
    return LayerExplanation(
        name=name,
        kind=type(module).__name__,
        channels=statistics.channels,
        kernel=kernel,
        mean_gate=float(statistics.mean.mean()),
        spread=statistics.spread,
        class_share=statistics.class_share,
        class_means=tuple(tuple(row) for row in statistics.class_means.tolist()),
        frozen_top1_change=top1_change,
        frozen_loss_change=loss_change,
    )
