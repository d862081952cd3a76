"""Exact nearest-neighbour search for answering queries (a photo against an index or a gallery), and the k-NN vote.

Distances are Euclidean, from one float32 matrix product: ``||q - x||^2 = ||q||^2 + ||x||^2 - 2 q.x`` (clipped
at 0). Items at exactly the same distance rank by their index, lower first (a stable sort), the rule of the PICR
ranking kernels in piro_cli.retrieval.metrics, which batch the same computation over whole splits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the search is numpy: `piro identify --onnx` answers without torch
    import torch

KNN_VOTES = 10  # neighbours that vote on a category (the PICR recognition tasks)
TIE_BREAKS = ("smallest", "nearest")


def as_matrix(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """A contiguous float32 (n, D) numpy array of embeddings."""
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.float32)


def squared_norms(items: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", items, items, dtype=np.float32)


def squared_distances(queries: np.ndarray, items: np.ndarray, item_norms: np.ndarray | None = None) -> np.ndarray:
    """(q, n) squared Euclidean distances, float32; `item_norms`: the items' squared norms when already known."""
    queries, items = as_matrix(queries), as_matrix(items)
    norms = squared_norms(items) if item_norms is None else item_norms
    out = queries @ items.T
    out *= -2.0
    out += norms[None, :]
    out += squared_norms(queries)[:, None]
    np.maximum(out, 0.0, out=out)
    return out


def nearest(
    queries: np.ndarray, items: np.ndarray, k: int, item_norms: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices (q, k), distances (q, k)) of each query's k nearest items, nearest first; ties to the lower index."""
    d2 = squared_distances(queries, items, item_norms)
    k = min(int(k), d2.shape[1])
    if k == 0:
        return np.empty((len(d2), 0), dtype=np.int64), np.empty((len(d2), 0), dtype=np.float32)
    if k < d2.shape[1]:  # the k smallest with every item tied with the k-th, then a stable sort of those
        kth = np.partition(d2, k - 1, axis=1)[:, k - 1 : k]
        order = np.empty((len(d2), k), dtype=np.int64)
        for row, (values, limit) in enumerate(zip(d2, kth[:, 0], strict=True)):
            candidates = np.flatnonzero(values <= limit)
            order[row] = candidates[np.argsort(values[candidates], kind="stable")[:k]]
    else:
        order = np.argsort(d2, axis=1, kind="stable")
    return order, np.sqrt(np.take_along_axis(d2, order, axis=1))


def vote(neighbour_labels: torch.Tensor, tie_break: str = "smallest") -> torch.Tensor:
    """Majority label of each row of (q, k) labels in rank order.

    tie_break: "smallest": a tie goes to the smallest tied label, as the released code's
    `argmax(bincount(...))` decides; "nearest": to the tied label whose nearest member ranks first (it
    depends on the ranking only, not on how the labels are numbered)."""
    import torch

    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie break {tie_break!r}; choose one of {', '.join(TIE_BREAKS)}")
    q, k = neighbour_labels.shape
    if k == 0:
        return torch.full((q,), -1, dtype=torch.int64)
    labels = neighbour_labels.long()
    num = int(labels.max()) + 1
    votes = torch.zeros(q, num, dtype=torch.int64, device=labels.device)
    votes.scatter_add_(1, labels, torch.ones_like(labels))
    if tie_break == "smallest":
        return votes.argmax(dim=1)  # the first of equal maxima: the smallest label
    first = torch.full((q, num), k, dtype=torch.int64, device=labels.device)
    ranks = torch.arange(k, device=labels.device).expand_as(labels)
    first.scatter_reduce_(1, labels, ranks, reduce="amin")
    # more votes first; among equal votes the smaller first rank (distinct per label, so no tie remains)
    return (votes * (k + 1) + (k - first)).argmax(dim=1)
