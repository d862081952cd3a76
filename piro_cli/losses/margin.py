"""An absolute-distance term for the object space (`piro train --distance-margin WEIGHT`).

L_piobj ranks: it pulls an object's views towards its view set and pushes confusers apart, but it never asks
that the same object's views lie under one fixed distance and other objects' over another. Open-set
identification (`piro identify`, `unknown`) thresholds a distance, so it gains from such a gap. This term is the
double-margin contrastive loss (Hadsell et al. 2006, with a positive margin as in pytorch-metric-learning's
ContrastiveLoss) on every point of the batch's object space, each single view and each view set labelled with
its object:

    L_margin = mean over same-object pairs of [d - m_pos]+^2 + mean over other-object pairs of [m_neg - d]+^2

with Euclidean distances between the L2-normalised embeddings (0 to 2); m_pos = 0.5 and m_neg = 1.0 (the
released separation margin beta) by default. Its weight is `--distance-margin` (0: off, the released loss).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DEFAULT_POSITIVE = 0.5
DEFAULT_NEGATIVE = 1.0


class DistanceMarginLoss(nn.Module):
    def __init__(self, positive: float = DEFAULT_POSITIVE, negative: float = DEFAULT_NEGATIVE) -> None:
        super().__init__()
        if not (math.isfinite(positive) and math.isfinite(negative) and 0 <= positive < negative <= 2):
            raise ValueError(f"distance margins {positive}, {negative}: need 0 <= positive < negative <= 2")
        self.positive, self.negative = float(positive), float(negative)

    def forward(self, sv: Tensor, mv: Tensor, ids: Tensor) -> Tensor:
        """sv (n, V, D) single views and mv (n, D) view sets of n objects (an object may appear twice), ids (n,)."""
        n, v = sv.shape[:2]
        points = torch.cat([sv.flatten(0, 1), mv])
        labels = torch.cat([ids.repeat_interleave(v), ids])
        points = points.float()
        squared = (points * points).sum(dim=1)
        # clamped away from 0 so that the gradient of the root stays finite for coinciding points (a repeated object)
        d = (squared[:, None] + squared[None, :] - 2 * points @ points.T).clamp_min(1e-12).sqrt()
        same = labels[:, None] == labels[None, :]
        off_diagonal = ~torch.eye(len(points), dtype=torch.bool, device=points.device)
        positive = same & off_diagonal
        negative = ~same
        pull = torch.relu(d[positive] - self.positive).pow(2).mean() if positive.any() else d.new_zeros(())
        push = torch.relu(self.negative - d[negative]).pow(2).mean() if negative.any() else d.new_zeros(())
        return pull + push
