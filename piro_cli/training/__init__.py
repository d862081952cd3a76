"""Training: the options (config), the data a run sees (data), the feature cache (cache), the Trainer and `train()`
(trainer), and training on several processes (distributed)."""

from piro_cli.training.cache import load_feature_cache
from piro_cli.training.config import TrainConfig
from piro_cli.training.data import RunData, open_run_data
from piro_cli.training.trainer import Trainer, TrainingDiverged, TrainReporter, TrainResult, train

__all__ = [
    "RunData", "TrainConfig", "Trainer", "TrainReporter", "TrainResult", "TrainingDiverged", "load_feature_cache",
    "open_run_data", "train",
]  # fmt: skip
