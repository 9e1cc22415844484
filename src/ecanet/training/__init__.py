"""Training: a plain config dataclass and ``train(config)``; single process or torchrun/DDP.

Example:
    >>> from ecanet.training import TrainConfig
    >>> TrainConfig(epochs=3).schedule
    'cosine'
"""

from ecanet.training.config import TrainConfig
from ecanet.training.trainer import TrainingInterrupted, TrainResult, build_model, train

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "build_model", "train"]
