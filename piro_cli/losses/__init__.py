"""Training losses: PiRO's (METHOD.md section 3), the PIEs baselines' (section 8), classic metric-learning losses
for the object space, ProxyGML, language guidance, the direction regulariser, the distance margin and DVML; one
small module per loss, and PiRO's sum of them (PiroLoss). Their names and defaults live in `registry` (no torch).

The names below load their module on first use, so that the command line starts without importing torch.
"""

from __future__ import annotations

from piro_cli.lazy import lazy_names

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


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "CATEGORY_LOSSES", "DIRECTION_LOSSES", "LOSS_TERMS", "OBJECT_LOSSES", "POSE_INVARIANT_LOSSES", "SEPARATIONS", "parse_loss_terms",
    "parse_object_loss", *_LAZY,
]  # fmt: skip
