"""The PIEs baseline losses (Ho et al., CVPR 2019; METHOD.md section 8), in a single embedding space.

- MV- methods train only the multi-view (view-set) embedding g_m(X) with a category loss L_X.
- PI- methods train L_X on g_m(X) and on every single-view embedding g_s(x), and add the pose-invariant
  pull d_pi = alpha * mean_x d(g_s(x), g_m(X)) + beta * d(g_m(X), p_c), p_c being the category's centre
  in the loss (classifier weight, proxy or triplet centre), L2-normalised like the embeddings.

L_X: "cnn" = softmax classifier (pml's NormalizedSoftmaxLoss: a cosine softmax, since piro's embeddings are
L2-normalised), "proxy" = ProxyNCA (pml's ProxyNCALoss), "tc" = triplet-center loss (He et al. 2018, below;
pytorch-metric-learning has none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import NormalizedSoftmaxLoss, ProxyNCALoss
from torch import Tensor

from .object import _distance

PIES_LOSSES = ("cnn", "proxy", "tc")


class TripletCenterLoss(torch.nn.Module):
    """Triplet-center loss (He et al., CVPR 2018): one learnable centre per class, and for each embedding
    [d(f, c_y) + margin - min_{j != y} d(f, c_j)]+, averaged over the embeddings.

    Distances are Euclidean between the (unit) embedding and the L2-normalised centres, so they lie in [0, 2];
    the default margin 0.5 is a quarter of that range.
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.5) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"the triplet-center loss needs at least 2 classes, got {num_classes}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.centers = torch.nn.Parameter(torch.randn(num_classes, embedding_size) / embedding_size**0.5)

    def extra_repr(self) -> str:
        return f"num_classes={self.centers.shape[0]}, margin={self.margin}"

    def class_centers(self) -> Tensor:
        return F.normalize(self.centers, dim=-1)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist = torch.cdist(embeddings, self.class_centers().to(embeddings.dtype))  # (N, C)
        own = dist.gather(1, labels[:, None]).squeeze(1)
        others = dist.masked_fill(F.one_hot(labels, dist.shape[1]).bool(), float("inf")).amin(dim=1)
        return torch.relu(own + self.margin - others).mean()


class _CategoryLoss(torch.nn.Module):
    """One of the three L_X with a uniform interface: forward(embeddings, labels) and class_centers() (C, D)."""

    def __init__(self, kind: str, num_classes: int, dim: int, tc_margin: float, proxy_scale: float) -> None:
        super().__init__()
        if kind not in PIES_LOSSES:
            raise ValueError(f"unknown PIEs loss {kind!r}; choose one of {', '.join(PIES_LOSSES)}")
        self.kind = kind
        if kind == "cnn":
            self.loss = NormalizedSoftmaxLoss(num_classes, dim)  # weights W: (dim, num_classes)
        elif kind == "proxy":
            # pml's default softmax_scale of 1 leaves the NCA softmax almost flat on the unit sphere; 3 sharpens it
            # (squared distances between unit vectors lie in [0, 4]).
            self.loss = ProxyNCALoss(num_classes, dim, softmax_scale=proxy_scale)
        else:
            self.loss = TripletCenterLoss(num_classes, dim, margin=tc_margin)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.loss(embeddings, labels)

    def class_centers(self) -> Tensor:
        if self.kind == "cnn":
            return F.normalize(self.loss.W.t(), dim=-1)
        if self.kind == "proxy":
            return F.normalize(self.loss.proxies, dim=-1)
        return self.loss.class_centers()


class PIEsLoss(torch.nn.Module):
    """MV-X or PI-X on one embedding space; see the module docstring. Called like `PiroLoss`:
    criterion(out_a, out_b, labels) with out_x.sv_cat (P, V, D) and out_x.mv_cat (P, D); the a- and b-objects
    of the pairs are simply 2P labelled view sets here. Returns {"total", "mv", and for PI- also "sv", "pi"}.
    """

    def __init__(
        self, kind: str, pose_invariant: bool, num_classes: int, dim: int, alpha: float = 1.0, beta: float = 1.0,
        tc_margin: float = 0.5, proxy_scale: float = 3.0,
    ) -> None:  # fmt: skip
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.pose_invariant = pose_invariant
        self.alpha, self.beta = float(alpha), float(beta)
        self.category_loss = _CategoryLoss(kind, num_classes, dim, tc_margin, proxy_scale)

    def extra_repr(self) -> str:
        return f"pose_invariant={self.pose_invariant}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, out_a, out_b, labels: Tensor, **_: object) -> dict[str, Tensor]:
        sv = torch.cat([out_a.sv_cat, out_b.sv_cat])  # (2P, V, D)
        mv = torch.cat([out_a.mv_cat, out_b.mv_cat])  # (2P, D)
        y = torch.cat([labels, labels])  # both objects of a pair share the category
        parts = {"mv": self.category_loss(mv, y)}
        if self.pose_invariant:
            parts["sv"] = self.category_loss(sv.flatten(0, 1), y.repeat_interleave(sv.shape[1]))
            centre = self.category_loss.class_centers().to(mv.dtype)[y]
            view_pull = _distance(sv, mv.unsqueeze(1)).mean()
            centre_pull = _distance(mv, centre).mean()
            parts["pi"] = self.alpha * view_pull + self.beta * centre_pull
        return {"total": sum(parts.values()), **parts}
