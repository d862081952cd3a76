"""Training losses: PiRO's (METHOD.md section 3), the PIEs baselines' (section 8), classic metric-learning losses
for the object space, ProxyGML, language guidance, the direction regulariser and DVML; one small module per loss,
and PiRO's sum of them (PiroLoss)."""

from .category import CategoryLSoftmaxLoss, PoseInvariantCategoryLoss
from .direction import DIRECTION_LOSSES, DirectionRegularisedTripletLoss
from .dvml import VariationalBranch
from .metric import OBJECT_LOSSES, ObjectMetricLoss, parse_object_loss
from .object import SEPARATIONS, PoseInvariantObjectLoss
from .pies import (
    PIES_LOSSES,
    POSE_INVARIANT_LOSSES,
    MVCNNLoss,
    MVProxyLoss,
    MVTCLoss,
    PICNNLoss,
    PIProxyLoss,
    PITCLoss,
)
from .total import CATEGORY_LOSSES, LOSS_TERMS, LossConfig, PiroLoss, parse_loss_terms

__all__ = [
    "CATEGORY_LOSSES",
    "DIRECTION_LOSSES",
    "DirectionRegularisedTripletLoss",
    "LOSS_TERMS",
    "OBJECT_LOSSES",
    "PIES_LOSSES",
    "POSE_INVARIANT_LOSSES",
    "SEPARATIONS",
    "CategoryLSoftmaxLoss",
    "LossConfig",
    "MVCNNLoss",
    "MVProxyLoss",
    "MVTCLoss",
    "ObjectMetricLoss",
    "PICNNLoss",
    "PIProxyLoss",
    "PITCLoss",
    "PiroLoss",
    "PoseInvariantCategoryLoss",
    "PoseInvariantObjectLoss",
    "VariationalBranch",
    "parse_loss_terms",
    "parse_object_loss",
]
