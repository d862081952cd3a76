"""Training losses: PiRO's (METHOD.md section 3), the PIEs baselines' (section 8), classic metric-learning losses
for the object space and DVML; one small module per loss, and their sums (PiroLoss, PIEsLoss)."""

from .category import CategoryLSoftmaxLoss, PoseInvariantCategoryLoss
from .dvml import VariationalBranch
from .metric import OBJECT_LOSSES, ObjectMetricLoss, parse_object_loss
from .object import SEPARATIONS, PoseInvariantObjectLoss
from .pies import PIES_LOSSES, PIEsLoss, TripletCenterLoss
from .total import LOSS_TERMS, LossConfig, PiroLoss, parse_loss_terms

__all__ = [
    "LOSS_TERMS",
    "OBJECT_LOSSES",
    "PIES_LOSSES",
    "SEPARATIONS",
    "CategoryLSoftmaxLoss",
    "LossConfig",
    "ObjectMetricLoss",
    "PIEsLoss",
    "PiroLoss",
    "PoseInvariantCategoryLoss",
    "PoseInvariantObjectLoss",
    "TripletCenterLoss",
    "VariationalBranch",
    "parse_loss_terms",
    "parse_object_loss",
]
