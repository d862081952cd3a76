"""Training losses: PiRO's (METHOD.md section 3), the PIEs baselines' (section 8), classic metric-learning losses
for the object space, ProxyGML, language guidance, the direction regulariser, the distance margin and DVML; one
small module per loss, and PiRO's sum of them (PiroLoss). Their names and defaults live in `registry` (no torch).

The names below load their module on first use, so that the command line starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import (
    CATEGORY_LOSSES,
    DIRECTION_LOSSES,
    LOSS_TERMS,
    OBJECT_LOSSES,
    POSE_INVARIANT_LOSSES,
    SEPARATIONS,
    parse_loss_terms,
    parse_object_loss,
)

_LAZY = {
    "CategoryLSoftmaxLoss": "category",
    "PoseInvariantCategoryLoss": "category",
    "DirectionRegularisedTripletLoss": "direction",
    "VariationalBranch": "dvml",
    "ObjectMetricLoss": "metric",
    "PoseInvariantObjectLoss": "object",
    "PIES_LOSSES": "pies",
    "MVCNNLoss": "pies",
    "MVProxyLoss": "pies",
    "MVTCLoss": "pies",
    "PICNNLoss": "pies",
    "PIProxyLoss": "pies",
    "PITCLoss": "pies",
    "LossConfig": "total",
    "PiroLoss": "total",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CATEGORY_LOSSES", "DIRECTION_LOSSES", "LOSS_TERMS", "OBJECT_LOSSES", "POSE_INVARIANT_LOSSES", "SEPARATIONS", "parse_loss_terms",
    "parse_object_loss", *_LAZY,
]  # fmt: skip
