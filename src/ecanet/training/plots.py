"""``curves.png`` of a run: loss and accuracy per epoch, written at the end of training.

matplotlib (the ``train`` extra) is imported inside the functions with the headless Agg backend,
so importing ecanet never needs it and no display is ever opened.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ecanet.dependencies import require
from ecanet.training.files import write_atomically

__all__ = ["plot_history", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or a :class:`~ecanet.dependencies.MissingDependency`
    saying which extra provides it."""
    require("plotting", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | Path) -> Path:
    """Writes ``figure`` as a PNG atomically and closes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    pyplot().close(figure)
    write_atomically(path, buffer.getvalue())
    return Path(path)


def plot_history(history: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Plots training and validation loss (left) and top-1/top-5 accuracy (right) against the epoch.

    Args:
        history: rows with ``epoch``, ``train_loss``, ``val_loss``, ``train_top1``, ``val_top1``, ``val_top5``.
        path: the PNG to write.
        title: figure title.

    Example:
        >>> import tempfile, pathlib
        >>> rows = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_top1": 40 + 10 * e,
        ...          "val_top1": 38 + 10 * e, "val_top5": 80 + 5 * e} for e in (1, 2, 3)]
        >>> plot_history(rows, pathlib.Path(tempfile.mkdtemp()) / "curves.png").stat().st_size > 0
        True
    """
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_axis.plot(epochs, [row["val_loss"] for row in history], "s-", label="validation")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    for key, label, style in (("train_top1", "train top-1", "o-"), ("val_top1", "val top-1", "s-"),
                              ("val_top5", "val top-5", "^--")):  # fmt: skip
        accuracy_axis.plot(epochs, [row[key] for row in history], style, label=label)
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)
