"""The six PIEs baseline losses (Ho et al., CVPR 2019), as the authors' code trains them (METHOD.md section 8).

Every loss takes one batch of B whole objects: the single-view embeddings `views` (B, V, D) and the view-set
embeddings `view_set` (B, D), both L2-normalised (x and s of METHOD.md), and the category `labels` (B,).
MV-CNN's classifier reads `pooled` (B, D) instead: the mean of the views' features before normalisation, as the
released mvcnn classifier does. One learned centre c_o per category lives in the loss module, drawn from a
standard normal and L2-normalised whenever it is used; MV-CNN has a fully connected classifier instead.

All distances are squared Euclidean, d2(u, v) = ||u - v||^2, and each loss is the mean over the batch's views
(PI-) or objects (MV-; each object's term counts once per view, so the two means agree), as released.
Defaults are the released ones: a = b = 1 for PI-CNN and PI-Proxy; a = 0.2, b = 1, margin 1 for PI-TC
(triplet_center_based/pitriplet/run.sh); margin 1 for MV-TC.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def squared_distances(u: Tensor, v: Tensor) -> Tensor:
    """d2 between every row of u (..., N, D) and every row of v (M, D): (..., N, M), as a sum of squared differences."""
    return (u.unsqueeze(-2) - v).pow(2).sum(dim=-1)


def _checked_labels(views: Tensor, view_set: Tensor, labels: Tensor) -> Tensor:
    """`labels` as int64, after checking the shapes of a batch."""
    if views.dim() != 3 or view_set.dim() != 2 or views.shape[0] != view_set.shape[0] or labels.shape != view_set.shape[:1]:
        raise ValueError(
            f"PIEs losses take views (B, V, D), view_set (B, D) and labels (B,); got {tuple(views.shape)}, "
            f"{tuple(view_set.shape)} and {tuple(labels.shape)}"
        )
    return labels.long()


class _CentreLoss(torch.nn.Module):
    """A PIEs loss with one learned centre per category (all but MV-CNN)."""

    min_classes = 1

    def __init__(self, num_classes: int, embedding_size: int) -> None:
        super().__init__()
        if num_classes < self.min_classes:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_classes} categories, got {num_classes}")
        self.centres = torch.nn.Parameter(torch.randn(num_classes, embedding_size))

    def class_centres(self) -> Tensor:
        """The centres as the loss uses them: L2-normalised, (C, D)."""
        return F.normalize(self.centres, p=2, dim=-1)

    def extra_repr(self) -> str:
        num_classes, dim = self.centres.shape
        return f"num_classes={num_classes}, embedding_size={dim}"


class _PoseInvariantSoftmax(_CentreLoss):
    """PI-CNN and PI-Proxy: for each view x of category y,
    -log [ sum_s exp(-a d2(x, s) - b d2(s, c_y)) / sum_s sum_o exp(-a d2(x, s) - b d2(s, c_o)) ],
    s over the batch's view sets, o over the categories (PI-Proxy: all but y)."""

    include_true_class: bool

    def __init__(self, num_classes: int, embedding_size: int, a: float = 1.0, b: float = 1.0) -> None:
        super().__init__(num_classes, embedding_size)
        self.a, self.b = float(a), float(b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, a={self.a}, b={self.b}"

    def forward(self, views: Tensor, view_set: Tensor, labels: Tensor, pooled: Tensor | None = None) -> Tensor:
        labels = _checked_labels(views, view_set, labels)
        x, s = views.float(), view_set.float()
        num_views = x.shape[1]
        view_term = -self.a * squared_distances(x, s)  # (B, V, B): view (i, k) against view set j
        centre_term = -self.b * squared_distances(s, self.class_centres())  # (B, C): view set j against category o
        y = labels.repeat_interleave(num_views)  # the category of every view, (B*V,)
        view_term = view_term.flatten(0, 1)  # (B*V, B)
        numerator = torch.logsumexp(view_term + centre_term[:, y].t(), dim=1)
        pairs = view_term[:, :, None] + centre_term[None]  # (B*V, B, C)
        if not self.include_true_class:
            pairs = pairs.masked_fill(F.one_hot(y, centre_term.shape[1]).bool()[:, None, :], float("-inf"))
        denominator = torch.logsumexp(pairs.flatten(1), dim=1)
        return (denominator - numerator).mean()


class PICNNLoss(_PoseInvariantSoftmax):
    """PI-CNN (cnn_based/picnn): the denominator sums over every category."""

    include_true_class = True


class PIProxyLoss(_PoseInvariantSoftmax):
    """PI-Proxy (proxy_based/piproxy): the denominator leaves the view's own category out (ProxyNCA)."""

    include_true_class = False
    min_classes = 2


class MVProxyLoss(_CentreLoss):
    """MV-Proxy (proxy_based/mvproxy): ProxyNCA on the view set, -log [exp(-d2(s, c_y)) / sum_{o != y} exp(-d2(s, c_o))]."""

    min_classes = 2

    def forward(self, views: Tensor, view_set: Tensor, labels: Tensor, pooled: Tensor | None = None) -> Tensor:
        labels = _checked_labels(views, view_set, labels)
        d2 = squared_distances(view_set.float(), self.class_centres())  # (B, C)
        own = d2.gather(1, labels[:, None]).squeeze(1)
        others = (-d2).masked_fill(F.one_hot(labels, d2.shape[1]).bool(), float("-inf"))
        # The released clamp of each exp at 1e-16 never binds: d2 <= 4 between unit vectors.
        return (own + torch.logsumexp(others, dim=1)).mean()


class MVTCLoss(_CentreLoss):
    """MV-TC (triplet_center_based/mvtriplet): [d2(s, c_y) - min_{o != y} d2(s, c_o) + margin]+ per view set."""

    min_classes = 2

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 1.0) -> None:
        super().__init__(num_classes, embedding_size)
        self.margin = float(margin)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"

    def forward(self, views: Tensor, view_set: Tensor, labels: Tensor, pooled: Tensor | None = None) -> Tensor:
        labels = _checked_labels(views, view_set, labels)
        d2 = squared_distances(view_set.float(), self.class_centres())  # (B, C)
        own = d2.gather(1, labels[:, None]).squeeze(1)
        nearest_other = d2.masked_fill(F.one_hot(labels, d2.shape[1]).bool(), float("inf")).amin(dim=1)
        return torch.relu(own - nearest_other + self.margin).mean()


class PITCLoss(_CentreLoss):
    """PI-TC (triplet_center_based/pitriplet): for each view x of object i (view set s_i, category y),
    [a d2(x, s_i) + b d2(s_i, c_y) - a min_{j != i} d2(x, s_j) - b min_{o != y} d2(s_i, c_o) + margin]+.
    Needs two objects in the batch (the nearest other view set)."""

    min_classes = 2

    def __init__(self, num_classes: int, embedding_size: int, a: float = 0.2, b: float = 1.0, margin: float = 1.0) -> None:
        super().__init__(num_classes, embedding_size)
        self.a, self.b, self.margin = float(a), float(b), float(margin)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, a={self.a}, b={self.b}, margin={self.margin}"

    def forward(self, views: Tensor, view_set: Tensor, labels: Tensor, pooled: Tensor | None = None) -> Tensor:
        labels = _checked_labels(views, view_set, labels)
        batch = view_set.shape[0]
        if batch < 2:
            raise ValueError("PI-TC needs at least two objects in a batch (each view's nearest other view set)")
        x, s = views.float(), view_set.float()
        view_d2 = squared_distances(x, s)  # (B, V, B)
        own_object = torch.eye(batch, dtype=torch.bool, device=s.device)[:, None, :]  # (B, 1, B)
        to_own_set = view_d2.masked_fill(~own_object, 0.0).sum(dim=2)  # (B, V)
        to_nearest_other_set = view_d2.masked_fill(own_object, float("inf")).amin(dim=2)  # (B, V)
        centre_d2 = squared_distances(s, self.class_centres())  # (B, C)
        to_own_centre = centre_d2.gather(1, labels[:, None])  # (B, 1)
        to_nearest_other_centre = centre_d2.masked_fill(F.one_hot(labels, centre_d2.shape[1]).bool(), float("inf")).amin(
            dim=1, keepdim=True
        )
        hinge = (
            self.a * to_own_set + self.b * to_own_centre - self.a * to_nearest_other_set - self.b * to_nearest_other_centre
            + self.margin
        )  # fmt: skip
        return torch.relu(hinge).mean()


class MVCNNLoss(torch.nn.Module):
    """MV-CNN (cnn_based/mvcnn): dropout (p 0.5, VGG's) and a fully connected layer on the pooled view features, then
    cross-entropy with the category. Reads `pooled`, the mean of the views' features before normalisation."""

    def __init__(self, num_classes: int, embedding_size: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(embedding_size, num_classes)

    def forward(self, views: Tensor, view_set: Tensor, labels: Tensor, pooled: Tensor | None = None) -> Tensor:
        labels = _checked_labels(views, view_set, labels)
        if pooled is None or pooled.shape != view_set.shape:
            raise ValueError("MV-CNN's classifier needs `pooled` (B, D): the mean of the views' features before normalisation")
        with torch.autocast(pooled.device.type, enabled=False):
            logits = self.classifier(self.dropout(pooled.float()))
        return F.cross_entropy(logits, labels)


PIES_LOSSES: dict[str, type[torch.nn.Module]] = {
    "mv-cnn": MVCNNLoss,
    "pi-cnn": PICNNLoss,
    "mv-proxy": MVProxyLoss,
    "pi-proxy": PIProxyLoss,
    "mv-tc": MVTCLoss,
    "pi-tc": PITCLoss,
}
from .registry import POSE_INVARIANT_LOSSES  # noqa: E402,F401 (the ones with the view weight a and the centre weight b)
