import csv
import json

import pytest
import torch

from ecanet.training.metrics import MetricsWriter, topk_correct


def reference_topk(logits: torch.Tensor, targets: torch.Tensor, k: int) -> int:
    """Counts samples whose target's score is beaten by fewer than k other classes (ties: lower index first)."""
    hits = 0
    for row, target in zip(logits.tolist(), targets.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda index: (-row[index], index))
        hits += target in order[:k]
    return hits


@pytest.mark.parametrize(("samples", "classes"), [(1, 10), (17, 10), (9, 3), (32, 100)])
def test_topk_matches_a_sort_based_count(samples: int, classes: int) -> None:
    generator = torch.Generator().manual_seed(samples * classes)
    logits = torch.randn(samples, classes, generator=generator)
    targets = torch.randint(classes, (samples,), generator=generator)
    assert topk_correct(logits, targets, ks=(1, 5)) == [reference_topk(logits, targets, k) for k in (1, 5)]


def test_topk_beyond_the_class_count_counts_everything() -> None:
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.3, 0.2]])
    assert topk_correct(logits, torch.tensor([0, 0, 1]), ks=(1, 5)) == [1, 3]


def test_writer_rewrites_csv_and_jsonl_from_the_history(tmp_path) -> None:
    writer = MetricsWriter(tmp_path)
    history = [{"epoch": 1, "train_loss": 2.0, "val_top1": 30.5}, {"epoch": 2, "train_loss": 1.5, "val_top1": 41.0}]
    writer.write([*history, {"epoch": 3, "train_loss": 9.0, "val_top1": 0.0}])
    writer.write(history)  # a resume drops the lost epoch's row
    writer.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [{key: float(value) for key, value in row.items()} for row in rows] == history
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history


def test_tensorboard_receives_every_metric_of_the_last_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ecanet.training.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path)
    history = [{"epoch": 1, "train_loss": 0.9, "val_top1": 61.5}]
    writer.write(history)
    history.append({"epoch": 2, "train_loss": 0.4, "val_top1": 80.25})
    writer.write(history)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train_loss", "val_top1"]
    logged = [(e.step, e.value) for e in events.Scalars("val_top1")]
    assert logged == [(1, 61.5), (2, 80.25)]
