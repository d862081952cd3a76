"""Classic deep-metric-learning losses for the object space (`piro train --obj-loss NAME`), from
pytorch-metric-learning rather than rewritten.

The labels are object identities: every single-view object embedding and the multi-view one of the same object
share a label, so a loss pulls an object's views (and its view-set embedding) together and pushes other
objects away, which is what L_piobj does with its confusers and margins. Proxy losses keep one proxy per
training object.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from torch import Tensor

from .direction import DirectionRegularisedTripletLoss
from .proxy_gml import ProxyGMLLoss
from .registry import DIRECTION_LOSSES, OBJECT_LOSSES, parse_object_loss  # noqa: F401 (re-exported)


class ObjectMetricLoss(torch.nn.Module):
    """A pytorch-metric-learning loss (and its miner, where the method has one) on object identities.

    forward(sv (N, V, D), mv (N, D), object_ids (N,)) -> scalar, over the N*V single views and the N view sets.
    `num_objects` sizes the proxies of proxy-nca / proxy-anchor / proxy-gml (object ids must be < num_objects);
    `options` go to ProxyGMLLoss (proxies_per_class, neighbourhood, regularisation). `direction_reg` (gamma > 0)
    adds the direction regulariser of losses/direction.py to the triplet loss, the one of these it applies to.
    """

    def __init__(self, name: str, num_objects: int, dim: int, direction_reg: float = 0.0, **options) -> None:
        super().__init__()
        self.name = parse_object_loss(name)
        if self.name == "piro":
            raise ValueError("'piro' is L_piobj, computed by PoseInvariantObjectLoss, not a metric-learning loss")
        if direction_reg and self.name not in DIRECTION_LOSSES:
            raise ValueError(f"the direction regulariser applies to triplets, not to the {self.name} loss")
        self.miner = None
        if self.name == "contrastive":
            self.loss = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
        elif self.name == "triplet":
            self.loss = DirectionRegularisedTripletLoss(direction_reg) if direction_reg else losses.TripletMarginLoss(margin=0.2)
            self.miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
        elif self.name == "npair":
            self.loss = losses.NPairsLoss()
        elif self.name == "multi-similarity":
            self.loss = losses.MultiSimilarityLoss()
            self.miner = miners.MultiSimilarityMiner()
        elif self.name == "proxy-gml":
            self.loss = ProxyGMLLoss(num_objects, dim, **options)
        elif self.name == "proxy-nca":
            self.loss = losses.ProxyNCALoss(num_objects, dim, softmax_scale=3.0)  # see losses/pies.py on the scale
        else:
            self.loss = losses.ProxyAnchorLoss(num_objects, dim)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"

    def forward(self, sv: Tensor, mv: Tensor, object_ids: Tensor) -> Tensor:
        embeddings = torch.cat([sv.flatten(0, 1), mv])
        labels = torch.cat([object_ids.repeat_interleave(sv.shape[1]), object_ids])
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))
