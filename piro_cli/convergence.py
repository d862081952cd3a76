"""The training progress signal and the early-stop rule (paper Fig. 6; METHOD.md section 4).

As the released code computes them (`calculate_stats` in utils/DataUtility_PiRO.py), on the single-view
object embeddings of the un-augmented training views, the model in eval mode:

- d_intra_max(i): the largest distance between two views of object i;
- d_inter_min(i): over the other objects j of i's category, the smallest MEAN distance between a view of
  i and a view of j (the mean over all V_i x V_j view pairs, not the closest pair of views);
- both averaged over the objects; rho = d_inter_min / d_intra_max.

An object alone in its category has no d_inter_min (the released code fails on such data: a minimum over
no objects). piro leaves these objects out of both means: they form no training pairs either
(piro_cli.data.samplers.plan_pairs), so the statistic describes the objects that train.

The stop rule, as released: the statistic is computed BEFORE each epoch, on the model as it is before that
epoch's training; the epoch trains; then, if that statistic's rho exceeds the threshold, training stops. So
one more epoch runs after rho first crosses the threshold. The statistic before epoch e is the statistic of
the model after epoch e - 1, which is how `piro train` computes it (one evaluation per epoch, plus one of
the initial model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Spread:
    """Mean d_intra_max and mean d_inter_min over the training objects, and rho = their ratio."""

    d_intra_max: float
    d_inter_min: float
    rho: float

    def as_row(self) -> dict[str, float]:
        return {"d_intra_max": self.d_intra_max, "d_inter_min": self.d_inter_min, "rho": self.rho}


def object_spread(sv_obj: torch.Tensor, labels: torch.Tensor, block_elements: int = 1 << 24) -> Spread:
    """The progress signal of single-view object embeddings `sv_obj` (N, V, D) of objects with categories `labels` (N,).

    Computed one category at a time, the objects' rows in blocks of at most `block_elements` view-pair
    distances, so that a large category (FG3D has hundreds of objects of 12 views) fits in memory.
    """
    n, v, _ = sv_obj.shape
    labels = torch.as_tensor(labels).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"object_spread: {n} objects but {len(labels)} labels")
    intra_max: list[torch.Tensor] = []
    inter_min: list[torch.Tensor] = []
    for category in torch.unique(labels):
        members = torch.nonzero(labels == category).flatten()
        m = len(members)
        if m < 2:
            continue  # alone in its category: no d_inter_min (see the module docstring)
        views = sv_obj[members].float()  # (m, V, D)
        flat = views.flatten(0, 1)  # (m*V, D)
        rows_per_block = max(1, block_elements // (v * m * v))
        for start in range(0, m, rows_per_block):
            block = views[start : start + rows_per_block]  # (b, V, D)
            b = len(block)
            dist = torch.cdist(block.flatten(0, 1), flat).reshape(b, v, m, v)
            mean_to = dist.mean(dim=(1, 3))  # (b, m): mean view-pair distance to every object of the category
            own = torch.arange(start, start + b)
            intra_max.append(dist[torch.arange(b), :, own, :].amax(dim=(1, 2)))
            mean_to[torch.arange(b), own] = math.inf  # an object is not its own nearest other object
            inter_min.append(mean_to.amin(dim=1))
    if not intra_max:
        return Spread(math.nan, math.nan, math.nan)
    intra = float(torch.cat(intra_max).mean())
    inter = float(torch.cat(inter_min).mean())
    return Spread(intra, inter, _ratio(inter, intra))


def _ratio(inter: float, intra: float) -> float:
    """inter / intra with float division's limits (the released code divides numpy floats)."""
    if intra > 0:
        return inter / intra
    return math.inf if inter > 0 else math.nan


def should_stop(spread_before_epoch: Spread, threshold: float) -> bool:
    """The released early-stop rule, checked after an epoch on the statistic computed before it; 0 disables it."""
    return threshold > 0 and spread_before_epoch.rho > threshold
