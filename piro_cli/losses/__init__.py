"""PiRO training losses (METHOD.md section 3): one small module per loss, and their sum."""

from .category import CategoryLSoftmaxLoss, PoseInvariantCategoryLoss
from .object import PoseInvariantObjectLoss
from .total import LOSS_TERMS, LossConfig, PiroLoss, parse_loss_terms

__all__ = [
    "LOSS_TERMS",
    "CategoryLSoftmaxLoss",
    "LossConfig",
    "PiroLoss",
    "PoseInvariantCategoryLoss",
    "PoseInvariantObjectLoss",
    "parse_loss_terms",
]
