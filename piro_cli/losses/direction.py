"""Direction regularisation (Mohan et al., "Moving in the Right Direction: A Regularization for Deep Metric Learning",
CVPR 2020) for the losses built on triplets.

A triplet loss pushes the negative x_n away from the anchor x_a only, so it can push x_n towards the positive x_p's
side of the cluster. The paper regularises the direction of that push by the layout of the triplet. The form used here
is written into the triplet's hinge, with weight gamma (`--direction-reg`):

    L = [ d(a, p) - d(a, n) + m - gamma * cos(p - a, n - a) ]+

cos(p - a, n - a) is the cosine of the angle at the anchor between the positive and the negative. A negative that
lies on the positive's side of the anchor (cos > 0) costs less and can leave the loss. Such a negative is near both
points of the pair, and the hinge stops pushing it through the pair. A negative behind the anchor (cos < 0) costs
more. gamma = 0 is the plain triplet loss.

Provenance: the paper's text is not reachable from piro's build machines. Only its abstract and two public
reproductions are: alpoler/mohan2020 (`loss/mvrloss.py`, the formula above, and its description of the geometry)
and a CENG501 course report. The formula therefore follows that reproduction, not the paper's own equations.
The reproduction reports CUB-200 Recall@1 51.9 for the triplet loss and 54.49 with the regulariser (GoogLeNet,
64-d, margin 0.278, gamma 0.49). It is not the paper's table.

Where the construction applies in piro:
- `--obj-loss triplet`: on every mined (semi-hard) triplet (DirectionRegularisedTripletLoss);
- L_piobj (`--obj-loss piro`): its confuser separation [beta - s(con_a, con_b)]+ pushes the confuser of one object
  away from the other's. Each confuser is an anchor, its own object's view-set embedding the positive and the other
  confuser the negative: the term becomes the mean of [beta - s - gamma * cos(mv_a - con_a, con_b - con_a)]+ and the
  same from b's side (`direction_separation`).
Where it does not: the contrastive loss (a negative pair has no positive to define a direction), N-pair,
multi-similarity and the proxy losses (their negatives are weighed in a softmax over many, not pushed from one
anchor of a triplet), nor the category space (L_picat only pulls together, L_cat is a softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor

from .registry import DIRECTION_LOSSES  # noqa: E402,F401 (the object losses it applies to; the docstring says why)


def direction_cosine(anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """cos(p - a, n - a) along the last dimension; 0 where either difference is the zero vector."""
    return F.cosine_similarity(positive - anchor, negative - anchor, dim=-1, eps=1e-12)


def direction_separation(gap: Tensor, beta: float, gamma: float, con_a: Tensor, con_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> Tensor:
    """L_piobj's confuser separation with the regulariser: the mean over the two confusers as anchors of
    [beta - gap - gamma * cos(own view set - anchor, other confuser - anchor)]+, shape (P,). gamma = 0 gives [beta - gap]+."""
    from_a = torch.relu(beta - gap - gamma * direction_cosine(con_a, mv_a, con_b))
    from_b = torch.relu(beta - gap - gamma * direction_cosine(con_b, mv_b, con_a))
    return (from_a + from_b) / 2


def _triplet_cosines(x: Tensor, y: Tensor, a: Tensor, p: Tensor, n: Tensor) -> Tensor:
    """cos(y_p - x_a, y_n - x_a) for every triplet, from the batch's Gram matrices: a batch has thousands of mined
    triplets but only dozens of embeddings, and gathering three (T, D) blocks made training 3x slower on ObjectPI.
    (y_p - x_a).(y_n - x_a) = y_p.y_n - x_a.y_p - x_a.y_n + x_a.x_a; the lengths likewise. 0 where a difference is
    (numerically) the zero vector, as direction_cosine gives."""
    xy, yy, xx = x @ y.T, y @ y.T, (x * x).sum(dim=1)
    yy_diag = yy.diagonal()
    dot = yy[p, n] - xy[a, p] - xy[a, n] + xx[a]
    ap2 = (yy_diag[p] - 2 * xy[a, p] + xx[a]).clamp(min=0)
    an2 = (yy_diag[n] - 2 * xy[a, n] + xx[a]).clamp(min=0)
    tiny = 1e-6 * float((xx.max() + yy_diag.max()).detach())  # float32 rounding of the Gram sums: a zero length reads ~1e-7
    degenerate = (ap2 < tiny) | (an2 < tiny)
    cosine = dot / (ap2.clamp(min=tiny).sqrt() * an2.clamp(min=tiny).sqrt())
    return torch.where(degenerate, torch.zeros_like(cosine), cosine.clamp(-1.0, 1.0))


class DirectionRegularisedTripletLoss(TripletMarginLoss):
    """pytorch-metric-learning's TripletMarginLoss with -gamma * cos(p - a, n - a) inside the hinge.

    The cosine is taken in the space the distance measures (the normalised embeddings under the default LpDistance).
    gamma = 0 is TripletMarginLoss exactly, reducer included (the mean over the triplets with a non-zero loss)."""

    def __init__(self, gamma: float, margin: float = 0.2, **kwargs) -> None:
        super().__init__(margin=margin, **kwargs)
        self.gamma = float(gamma)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if self.swap or self.smooth_loss:
            raise ValueError("the direction regulariser is defined for the plain hinge (swap=False, smooth_loss=False)")
        triplets = lmu.convert_to_triplets(indices_tuple, labels, ref_labels, t_per_anchor=self.triplets_per_anchor)
        anchor_idx, positive_idx, negative_idx = triplets
        if len(anchor_idx) == 0:
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        margins = self.distance.margin(mat[anchor_idx, positive_idx], mat[anchor_idx, negative_idx])
        x = self.distance.normalize(embeddings) if self.distance.normalize_embeddings else embeddings
        y = self.distance.normalize(ref_emb) if self.distance.normalize_embeddings else ref_emb
        cosine = _triplet_cosines(x, y, anchor_idx, positive_idx, negative_idx)
        losses = torch.relu(margins + self.margin - self.gamma * cosine)
        return {"loss": {"losses": losses, "indices": triplets, "reduction_type": "triplet"}}
