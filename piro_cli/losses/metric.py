"""Classic deep-metric-learning losses for the object space (`piro train --obj-loss NAME`), from
pytorch-metric-learning rather than rewritten.

The labels are object identities: every single-view object embedding and the multi-view one of the same object
share a label, so a loss pulls an object's views (and its view-set embedding) together and pushes other
objects away, which is what L_piobj does with its confusers and margins. Proxy losses keep one proxy per
training object.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch_metric_learning import losses, miners
from torch import Tensor

from .direction import DirectionRegularisedTripletLoss
from .proxy_gml import ProxyGMLLoss
from .registry import DIRECTION_LOSSES, OBJECT_LOSSES, parse_object_loss  # noqa: F401 (re-exported)

Built = tuple[torch.nn.Module, "miners.BaseMiner | None"]


def _triplet(num_objects: int, dim: int, direction_reg: float, options: dict) -> Built:
    loss = DirectionRegularisedTripletLoss(direction_reg) if direction_reg else losses.TripletMarginLoss(margin=0.2)
    return loss, miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")


OBJECT_METRIC_LOSSES: dict[str, Callable[[int, int, float, dict], Built]] = {
    # name -> (num_objects, dim, direction_reg, options) -> (loss, miner or None); the names and their summaries
    # are registry.OBJECT_LOSSES ("piro" is L_piobj, losses/object.py)
    "contrastive": lambda n, d, r, o: (losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0), None),
    "triplet": _triplet,
    "npair": lambda n, d, r, o: (losses.NPairsLoss(), None),
    "multi-similarity": lambda n, d, r, o: (losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()),
    "proxy-gml": lambda n, d, r, o: (ProxyGMLLoss(n, d, **o), None),
    "proxy-nca": lambda n, d, r, o: (losses.ProxyNCALoss(n, d, softmax_scale=3.0), None),  # losses/pies.py: the scale
    "proxy-anchor": lambda n, d, r, o: (losses.ProxyAnchorLoss(n, d), None),
}
"""The object-space metric-learning losses by name, timm-style: one builder each."""
assert set(OBJECT_METRIC_LOSSES) == set(OBJECT_LOSSES) - {"piro"}, "every object loss name needs a builder"


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
        self.loss, self.miner = OBJECT_METRIC_LOSSES[self.name](num_objects, dim, direction_reg, options)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"

    def forward(self, sv: Tensor, mv: Tensor, object_ids: Tensor) -> Tensor:
        embeddings = torch.cat([sv.flatten(0, 1), mv])
        labels = torch.cat([object_ids.repeat_interleave(sv.shape[1]), object_ids])
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))
