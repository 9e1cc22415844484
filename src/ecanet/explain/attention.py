"""``explain_attention``: what a network's attention layers do on labelled data, layer by layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence, Sized

import torch
from torch import Tensor, nn

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
    attention that depends on the input, beyond a fixed rescaling of the channels. ECA layers
    also report their learned kernel.

    The network runs in eval mode without gradients, on the device of its parameters; its mode
    is restored afterwards.

    Args:
        model: a classifier with attention layers.
        batches: ``(images, labels)`` batches, re-iterable (a DataLoader or a list) when ``freeze``.
        classes: class names, index = label.
        freeze: measure the accuracy with frozen gates (one pass per ECA or SE layer, and one more).
        name: the network's name in the report (default: its class name).
        progress: show tqdm progress bars.

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
    frozen: dict[nn.Module, tuple[float, float, int]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            with _recorded_gates(statistics) as labels_of_batch:
                accuracy, loss, images = passes.run("gates", labels_of_batch)
            for layer_name, module in layers:
                if statistics[module].count != images:
                    raise ValueError(
                        f"explain needs every attention layer to run once per image: {layer_name} ran for "
                        f"{statistics[module].count} of {images} images"
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
        _explanation(layer_name, module, statistics[module], frozen.get(module)) for layer_name, module in layers
    )
    return AttentionReport(
        model=name or type(model).__name__,
        classes=tuple(classes),
        images=images,
        accuracy=accuracy,
        loss=loss,
        layers=explanations,
        chance_class_share=statistics[layers[0][1]].chance_class_share,
        all_static_accuracy=all_frozen[0] if freeze else None,
        all_static_loss=all_frozen[1] if freeze else None,
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

    def run(self, description: str, labels_of_batch: list[Tensor] | None = None) -> tuple[float, float, int]:
        """One pass; ``labels_of_batch`` receives each batch's labels before the network runs on it."""
        if self.bar is not None:
            self.bar.set_description(description)
        correct, loss, count = 0, 0.0, 0
        for images, labels in self.batches:
            labels = labels.to(self.device)
            if labels_of_batch is not None:
                labels_of_batch[:] = [labels]
            logits = self.model(images.to(self.device)).float()
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            count += labels.shape[0]
            if self.bar is not None:
                self.bar.update()
        if count == 0:
            raise ValueError("batches yielded no images")
        return 100.0 * correct / count, loss / count, count

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _explanation(
    name: str, module: nn.Module, statistics: GateStatistics, frozen: tuple[float, float, int] | None
) -> LayerExplanation:
    kernel = ()
    if isinstance(module, ECA):
        weight = module.conv.weight.detach()  # [rows, 1, k]
        kernel = tuple(tuple(row) for row in weight[:, 0].double().tolist())
    return LayerExplanation(
        name=name,
        kind=type(module).__name__,
        channels=statistics.channels,
        kernel=kernel,
        mean_gate=float(statistics.mean.mean()),
        spread=statistics.spread,
        class_share=statistics.class_share,
        class_means=tuple(tuple(row) for row in statistics.class_means.tolist()),
        static_accuracy=None if frozen is None else frozen[0],
        static_loss=None if frozen is None else frozen[1],
    )
