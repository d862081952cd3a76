"""Category-space losses: the pose-invariant category loss L_picat and the L-Softmax L_cat (METHOD.md section 3)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import LargeMarginSoftmaxLoss
from pytorch_metric_learning.miners import BatchEasyHardMiner
from torch import Tensor

from .geometry import check_pair_shapes, distance


class PoseInvariantCategoryLoss(torch.nn.Module):
    """L_picat = [d_sm^a - theta]+ + [d_sm^b - theta]+ + [d(c_mv^a, c_mv^b) - theta]+, averaged over the P pairs,
    where d_sm^x = mean over the views k of x of d(c_k^x, c_mv^x); plain distances throughout, as in the released
    losses/PILosses.py (its PILossCAT takes a lamda but never uses it: lambda weighs only L_piobj's separation).
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
        return distance(sv, mv.unsqueeze(1)).mean(dim=1)

    def forward(self, sv_a: Tensor, sv_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> Tensor:
        """sv_a, sv_b: (P, V, D) single-view category embeddings; mv_a, mv_b: (P, D) multi-view ones. Scalar."""
        return self.per_pair(sv_a, sv_b, mv_a, mv_b).mean()

    def per_pair(self, sv_a: Tensor, sv_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> Tensor:
        """L_picat for every pair, shape (P,)."""
        check_pair_shapes(sv_a, sv_b, mv_a, mv_b)
        t = self.theta
        return (
            torch.relu(self.d_sm(sv_a, mv_a) - t) + torch.relu(self.d_sm(sv_b, mv_b) - t) + torch.relu(distance(mv_a, mv_b) - t)
        )


class CategoryLSoftmaxLoss(torch.nn.Module):
    """L_cat: large-margin softmax (L-Softmax, Liu et al. 2016; pytorch-metric-learning's LargeMarginSoftmaxLoss,
    margin gamma) on single-view category embeddings, weighted by pml's
    BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard"), as the authors' released code
    (losses/CategoryLoss.py) does.

    The miner returns pairs, not triplets: (anchors, hardest positives, anchors, hardest negatives), one entry per
    view that has both a positive (another view with its label) and a negative in the batch. pml classification
    losses use a miner's tuple only as per-view weights (`lmu.convert_to_weights`): the number of times a view
    appears in the four index tensors, divided by the largest such count. A kept anchor therefore counts twice,
    and views that are no anchor, hardest positive or hardest negative weigh 0. (pml's BatchHardMiner returns the
    triplets (anchors, positives, negatives) of the same mining, which counts each anchor once: other weights.) A
    batch without any pair (one category only) mines nothing, and pml then weighs every view 1.

    Class weights: the matrix `self.lsoftmax.W` (embedding_size x num_classes, drawn from N(0, 1) when the module
    is built). The released optimiser holds only the model's parameters, so by default W keeps its random
    initialisation: it is built with requires_grad False (no gradient, no optimiser step), yet it stays in the
    state dict, so checkpoints restore it exactly. `train_weights=True` lets the optimiser train it.

    Scaling: one call returns the (miner-weighted) L-Softmax averaged over all the single views it is given
    (pml's MeanReducer divides by the number of views, weighted or not). `PiroLoss` calls it once for the
    a-objects and once for the b-objects of the pair batch, each half mined on its own, and adds the two values,
    as the released code does.
    """

    def __init__(
        self, num_classes: int, embedding_size: int, gamma: float = 4.0, use_miner: bool = True, train_weights: bool = False
    ) -> None:
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
        self.train_weights = bool(train_weights)
        self.lsoftmax = LargeMarginSoftmaxLoss(
            num_classes=self.num_classes, embedding_size=self.embedding_size, margin=self.gamma
        )
        self.lsoftmax.W.requires_grad_(self.train_weights)
        self.miner = BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard") if self.use_miner else None

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, gamma={self.gamma}, "
            f"use_miner={self.use_miner}, train_weights={self.train_weights}"
        )

    def forward(self, sv: Tensor, labels: Tensor) -> Tensor:
        """sv: (N, V, D) or (M, D) single-view category embeddings; labels: (N,) per object (repeated for each of its
        V views) or (M,) per view. Returns the scalar mean over views (see the class docstring)."""
        emb, lab = self._flatten(sv, labels)
        # In fp32 even under mixed precision, as the released code ran: pml casts W.data in place to the embeddings'
        # dtype on every call, which would store the (frozen) class weights in bf16/fp16 for good.
        emb = emb.float()
        indices_tuple = self.miner(emb, lab) if self.miner is not None else None
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
