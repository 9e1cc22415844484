"""Accuracy and the per-epoch metric files of a run (CSV, JSON lines, TensorBoard when installed)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from torch import Tensor

from ecanet.training.files import write_atomically

__all__ = ["HISTORY_FIELDS", "MetricsWriter", "topk_correct"]

HISTORY_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "epoch_seconds",
    "images_per_second",
)


def topk_correct(logits: Tensor, targets: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the ``k`` highest logits, for each ``k``.

    ``k`` larger than the number of classes counts every sample.

    Args:
        logits: class scores.
        targets: class indices.
        ks: the values of k.

    Shape:
        - logits: ``(N, num_classes)``.
        - targets: ``(N,)``.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
        >>> topk_correct(logits, torch.tensor([2, 0]), ks=(1, 2))
        [1, 2]
    """
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == targets.unsqueeze(1)
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


class MetricsWriter:
    """Writes a run's history to ``metrics.csv`` and ``metrics.jsonl`` (and TensorBoard if installed).

    The files are rewritten in full and atomically after every epoch from the history kept in the
    checkpoint, so after a resume they match the checkpoint exactly (an epoch lost to a crash
    does not linger as a stale row).

    Args:
        run_dir: the run's directory.

    Example:
        >>> import tempfile, pathlib
        >>> writer = MetricsWriter(pathlib.Path(tempfile.mkdtemp()))
        >>> writer.write([{"epoch": 1, "train_loss": 0.5}])
        >>> (writer.run_dir / "metrics.jsonl").read_text()
        '{"epoch": 1, "train_loss": 0.5}\\n'
        >>> writer.close()
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))

    def write(self, history: list[dict]) -> None:
        """Rewrites the metric files with ``history`` and logs its last row to TensorBoard."""
        text = io.StringIO()
        fields = list(dict.fromkeys(key for row in history for key in row))
        table = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        table.writeheader()
        table.writerows(history)
        write_atomically(self.run_dir / "metrics.csv", text.getvalue().encode())
        lines = "".join(json.dumps(row) + "\n" for row in history)
        write_atomically(self.run_dir / "metrics.jsonl", lines.encode())
        if self.tensorboard is not None and history:
            row = history[-1]
            for key, value in row.items():
                if key != "epoch":
                    self.tensorboard.add_scalar(key, value, row["epoch"])
            self.tensorboard.flush()

    def close(self) -> None:
        """Closes the TensorBoard writer, if any."""
        if self.tensorboard is not None:
            self.tensorboard.close()
