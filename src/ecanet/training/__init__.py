"""Training: a plain config dataclass and ``train(config)``; single process or torchrun/DDP.

Example:
    >>> from ecanet.training import TrainConfig
    >>> TrainConfig(epochs=3).schedule
    'cosine'
"""

from ecanet.training.config import TrainConfig
from ecanet.training.trained_model import TrainedModel, load_trained_model
from ecanet.training.trainer import TrainingInterrupted, TrainResult, build_model, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainedModel",
    "TrainingInterrupted",
    "build_model",
    "load_trained_model",
    "train",
]
