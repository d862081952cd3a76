"""Training: the options (config), the data a run sees (data), the feature cache (cache), the Trainer and `train()`
(trainer), and training on several processes (distributed). Names below load their module on first use, so that
the command line starts without importing torch."""

from __future__ import annotations

from piro_cli.lazy import lazy_names

_LAZY = {
    "load_feature_cache": "cache",
    "TrainConfig": "config",
    "RunData": "data",
    "open_run_data": "data",
    "Trainer": "trainer",
    "TrainingDiverged": "trainer",
    "TrainReporter": "trainer",
    "TrainResult": "trainer",
    "train": "trainer",
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = list(_LAZY)
