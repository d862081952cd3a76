"""Category-space losses: the pose-invariant category loss L_picat and the L-Softmax L_cat (METHOD.md section 3)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import LargeMarginSoftmaxLoss
from pytorch_metric_learning.miners import BatchHardMiner
from torch import Tensor

from .object import _check_pair_shapes, _distance


class PoseInvariantCategoryLoss(torch.nn.Module):
    """L_picat = [d_sm^a - theta]+ + [d_sm^b - theta]+ + [d(c_mv^a, c_mv^b) - theta]+, averaged over the P pairs,
    where d_sm^x = mean over the views k of x of d(c_k^x, c_mv^x).
    """

    def __init__(self, theta: float = 0.25) -> None:
        super().__init__()
        if theta < 0:
            raise ValueError(f"theta must be >= 0, got {theta}")
        self.theta = float(theta)

    def extra_repr(self) -> str:
        return f"theta={self.theta}"

    @staticmethod
    def d_sm(sv: Tensor, mv: Tensor) -> Tensor:
        """Mean distance of each object's single views (P, V, D) to its multi-view embedding (P, D); shape (P,)."""
        return _distance(sv, mv.unsqueeze(1)).mean(dim=1)

    def forward(self, sv_a: Tensor, sv_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> Tensor:
        """sv_a, sv_b: (P, V, D) single-view category embeddings; mv_a, mv_b: (P, D) multi-view ones. Scalar."""
        return self.per_pair(sv_a, sv_b, mv_a, mv_b).mean()

    def per_pair(self, sv_a: Tensor, sv_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> Tensor:
        """L_picat for every pair, shape (P,)."""
        _check_pair_shapes(sv_a, sv_b, mv_a, mv_b)
        t = self.theta
        return (
            torch.relu(self.d_sm(sv_a, mv_a) - t) + torch.relu(self.d_sm(sv_b, mv_b) - t) + torch.relu(_distance(mv_a, mv_b) - t)
        )


class CategoryLSoftmaxLoss(torch.nn.Module):
    """L_cat: large-margin softmax (L-Softmax, Liu et al. 2016; pytorch-metric-learning's LargeMarginSoftmaxLoss,
    margin gamma) on single-view category embeddings, after pml's BatchHardMiner has mined the hardest positive and
    hardest negative of every view in the batch (as the authors' released code does).

    Learnable weights: the class weight matrix `self.lsoftmax.W`, stored by pml as (embedding_size x num_classes),
    i.e. one weight vector per class. The trainer must give this module's parameters to its optimiser.

    How mining enters: pml classification losses use a miner's indices_tuple only as per-sample weights
    (`lmu.convert_to_weights`): each view is weighted by how often it appears in the mined triplets, divided by the
    largest such count, so views that are nobody's hardest positive/negative and no anchor get weight 0.

    Scaling: one call returns the (miner-weighted) L-Softmax averaged over all the single views it is given
    (pml's MeanReducer divides by the number of views, weighted or not). For objects with V views each this is the
    mean over objects of "mean over the views of x of the L-Softmax", i.e. the mean over pairs of L_cat^x.
    `PiroLoss` calls it once for the a-objects and once for the b-objects and adds the two, which is exactly
    mean over pairs of (L_cat^a + L_cat^b), i.e. 2x the mean over all the batch's single views.
    """

    def __init__(self, num_classes: int, embedding_size: int, gamma: float = 4.0, use_miner: bool = True) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ValueError(f"num_classes and embedding_size must be >= 1, got {num_classes} and {embedding_size}")
        # pml's L-Softmax uses the multiple-angle formula cos(m*theta), defined only for an integer margin; it would
        # silently truncate 4.5 to 4, so refuse non-integers instead.
        if gamma < 1 or not float(gamma).is_integer():
            raise ValueError(f"gamma (the L-Softmax margin) must be a positive integer, got {gamma}")
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.gamma = int(gamma)
        self.use_miner = bool(use_miner)
        self.lsoftmax = LargeMarginSoftmaxLoss(
            num_classes=self.num_classes, embedding_size=self.embedding_size, margin=self.gamma
        )
        # The authors' code uses BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard"), which is BatchHardMiner.
        self.miner = BatchHardMiner() if self.use_miner else None

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, gamma={self.gamma}, use_miner={self.use_miner}"

    def forward(self, sv: Tensor, labels: Tensor) -> Tensor:
        """sv: (N, V, D) or (M, D) single-view category embeddings; labels: (N,) per object (repeated for each of its
        V views) or (M,) per view. Returns the scalar mean over views (see the class docstring)."""
        emb, lab = self._flatten(sv, labels)
        indices_tuple = None
        if self.miner is not None:
            mined = self.miner(emb, lab)
            # A batch with a single category (no negatives) or no view with a positive yields no triplets. pml would
            # then weight every view 1 anyway; we make that fallback explicit: this batch is trained without mining.
            if mined[0].numel() > 0:
                indices_tuple = mined
        return self.lsoftmax(emb, lab, indices_tuple)

    def _flatten(self, sv: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        labels = labels.to(device=sv.device, dtype=torch.long)
        if labels.dim() != 1:
            raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
        if sv.dim() == 3:
            n, v, d = sv.shape
            if labels.shape[0] != n:
                raise ValueError(f"got {labels.shape[0]} labels for {n} objects of shape {tuple(sv.shape)}")
            emb, lab = sv.reshape(n * v, d), labels.repeat_interleave(v)
        elif sv.dim() == 2:
            if labels.shape[0] != sv.shape[0]:
                raise ValueError(f"got {labels.shape[0]} labels for {sv.shape[0]} views")
            emb, lab = sv, labels
        else:
            raise ValueError(f"single-view embeddings must be (N, V, D) or (M, D), got {tuple(sv.shape)}")
        if emb.shape[0] == 0:
            raise ValueError("empty batch: at least one view is needed")
        if emb.shape[1] != self.embedding_size:
            raise ValueError(f"embeddings have {emb.shape[1]} dimensions, the loss was built for {self.embedding_size}")
        if lab.min() < 0 or lab.max() >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {lab.min().item()}..{lab.max().item()}")
        return emb, lab
