"""The geometry the pose-invariant losses share: Euclidean distances and the shapes of a pair batch's embeddings."""

from __future__ import annotations

import torch
from torch import Tensor


def distance(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean distance along the last dimension.

    `vector_norm` has a zero (not NaN) gradient when x == y, so coincident embeddings are safe.
    """
    return torch.linalg.vector_norm(x - y, dim=-1)


def check_pair_shapes(sv_a: Tensor, sv_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> None:
    if sv_a.dim() != 3 or sv_b.dim() != 3:
        raise ValueError(f"single-view embeddings must be (P, V, D); got {tuple(sv_a.shape)} and {tuple(sv_b.shape)}")
    if mv_a.dim() != 2 or mv_b.dim() != 2:
        raise ValueError(f"multi-view embeddings must be (P, D); got {tuple(mv_a.shape)} and {tuple(mv_b.shape)}")
    p, d = sv_a.shape[0], sv_a.shape[2]
    for name, t in (("sv_b", sv_b), ("mv_a", mv_a), ("mv_b", mv_b)):
        if t.shape[0] != p or t.shape[-1] != d:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}; expected P={p} pairs and D={d} dimensions like sv_a {tuple(sv_a.shape)}"
            )
    if p == 0:
        raise ValueError("empty batch: at least one pair is needed")
