"""Training: the options (config), the data a run sees (data), the feature cache (cache), the Trainer and `train()`
(trainer), and training on several processes (distributed). Names below load their module on first use, so that
the command line starts without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
