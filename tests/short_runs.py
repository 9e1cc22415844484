"""A trained checkpoint in seconds, for the tests of what reads one (export, explain)."""

from pathlib import Path

from ecanet.training import TrainConfig, train
from intra_op_threads import intra_op_threads


def train_short_run(run_dir: Path, model: str = "eca_resnet18") -> Path:
    """Trains ``model`` at width 8 for three steps on the embedded data; returns its ``last.pt``."""
    config = TrainConfig(
        model=model, model_kwargs={"width": 8}, epochs=1, batch_size=16, max_steps_per_epoch=3,
        seed=2, progress=False, run_dir=str(run_dir),
    )  # fmt: skip
    with intra_op_threads(1):
        train(config)
    return run_dir / "last.pt"
