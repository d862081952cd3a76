"""The eight pose-invariant classification and retrieval (PICR) tasks of METHOD.md section 5.

Gallery = training objects, probes = test (or validation) objects. Classification
reports accuracy, retrieval mean average precision, both in percent.

Distances are Euclidean on L2-normalised embeddings. Rankings sort by distance
with ties broken by item index (a stable sort), so results are deterministic.
Queries are processed in chunks so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TASKS = (
    "sv-category-recognition",
    "mv-category-recognition",
    "sv-object-recognition",
    "mv-object-recognition",
    "sv-category-retrieval",
    "mv-category-retrieval",
    "sv-object-retrieval",
    "mv-object-retrieval",
)
"""The paper's column order: classification then retrieval; category then object; single then multi view."""

KNN_VOTES = 10


@dataclass
class EmbeddingSet:
    """Embeddings of the objects of one split (all L2-normalised)."""

    sv_cat: torch.Tensor  # (N, V, Dc)
    sv_obj: torch.Tensor  # (N, V, Do)
    mv_cat: torch.Tensor  # (N, Dc)
    mv_obj: torch.Tensor  # (N, Do)
    mv_obj_first: torch.Tensor  # (N, Do) o_mv of the first V/2 views
    mv_obj_last: torch.Tensor  # (N, Do) o_mv of the last V/2 views
    labels: torch.Tensor  # (N,) category indices


def _distances(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return torch.cdist(queries.float(), items.float())


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def knn_vote_accuracy(
    queries: torch.Tensor, q_labels: torch.Tensor, items: torch.Tensor, i_labels: torch.Tensor, k: int = KNN_VOTES, chunk: int = 1024
) -> float:
    """Majority vote of the k nearest items; a tie goes to the tied label whose nearest member ranks first."""
    k = min(k, len(items))
    num_classes = int(max(q_labels.max(), i_labels.max())) + 1
    correct = 0
    for start, stop in _chunks(len(queries), chunk):
        dist = _distances(queries[start:stop], items)
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        neighbour_labels = i_labels[order]  # (q, k)
        votes = torch.zeros(len(order), num_classes, device=items.device)
        votes.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels, dtype=votes.dtype))
        # Tie-break: a tiny bonus that decreases with the rank of each label's first occurrence.
        first_rank = torch.full((len(order), num_classes), float(k), device=items.device)
        ranks = torch.arange(k, device=items.device, dtype=first_rank.dtype).expand_as(neighbour_labels)
        first_rank.scatter_reduce_(1, neighbour_labels, ranks, reduce="amin")
        predicted = (votes - first_rank / (k + 1)).argmax(dim=1)
        correct += int((predicted == q_labels[start:stop]).sum())
    return 100.0 * correct / len(queries)


def nearest_accuracy(
    queries: torch.Tensor, q_ids: torch.Tensor, items: torch.Tensor, i_ids: torch.Tensor, exclude_self: bool, chunk: int = 1024
) -> float:
    """Share of queries whose nearest item has the same id (the query itself excluded when it is in `items`)."""
    correct = 0
    for start, stop in _chunks(len(queries), chunk):
        dist = _distances(queries[start:stop], items)
        if exclude_self:
            rows = torch.arange(stop - start, device=dist.device)
            dist[rows, rows + start] = float("inf")
        nearest = torch.sort(dist, dim=1, stable=True).indices[:, 0]
        correct += int((i_ids[nearest] == q_ids[start:stop]).sum())
    return 100.0 * correct / len(queries)


def mean_average_precision(
    queries: torch.Tensor, q_ids: torch.Tensor, items: torch.Tensor, i_ids: torch.Tensor, exclude_self: bool, chunk: int = 512
) -> float:
    """mAP of ranking `items` for each query, relevant = same id. With `exclude_self`, query i is item i and is left out."""
    total = 0.0
    for start, stop in _chunks(len(queries), chunk):
        dist = _distances(queries[start:stop], items)
        relevant = i_ids.unsqueeze(0) == q_ids[start:stop].unsqueeze(1)
        if exclude_self:
            rows = torch.arange(stop - start, device=dist.device)
            dist[rows, rows + start] = float("inf")
            relevant[rows, rows + start] = False
        order = torch.sort(dist, dim=1, stable=True).indices
        hits = torch.gather(relevant, 1, order).float()
        precision_at_k = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1, device=hits.device)
        num_relevant = hits.sum(1)
        ap = (precision_at_k * hits).sum(1) / num_relevant.clamp(min=1)
        total += float(ap[num_relevant > 0].sum())
    return 100.0 * total / len(queries)


def evaluate_picr(gallery: EmbeddingSet, probes: EmbeddingSet, tasks: tuple[str, ...] = TASKS) -> dict[str, float]:
    """The requested PICR tasks, in percent, in `TASKS` order."""
    n, v = probes.sv_obj.shape[:2]
    view_labels = probes.labels.repeat_interleave(v)
    view_objects = torch.arange(n, device=probes.labels.device).repeat_interleave(v)
    objects = torch.arange(n, device=probes.labels.device)
    results: dict[str, float] = {}
    for task in tasks:
        if task == "sv-category-recognition":
            g = gallery.sv_cat.shape[1]
            results[task] = knn_vote_accuracy(
                probes.sv_cat.flatten(0, 1), view_labels, gallery.sv_cat.flatten(0, 1), gallery.labels.repeat_interleave(g)
            )
        elif task == "mv-category-recognition":
            results[task] = knn_vote_accuracy(probes.mv_cat, probes.labels, gallery.mv_cat, gallery.labels)
        elif task == "sv-object-recognition":
            sv = probes.sv_obj.flatten(0, 1)
            results[task] = nearest_accuracy(sv, view_objects, sv, view_objects, exclude_self=True)
        elif task == "mv-object-recognition":
            results[task] = nearest_accuracy(probes.mv_obj_first, objects, probes.mv_obj_last, objects, exclude_self=False)
        elif task == "sv-category-retrieval":
            sv = probes.sv_cat.flatten(0, 1)
            # The released code keeps the query itself in category rankings.
            results[task] = mean_average_precision(sv, view_labels, sv, view_labels, exclude_self=False)
        elif task == "mv-category-retrieval":
            results[task] = mean_average_precision(probes.mv_cat, probes.labels, probes.mv_cat, probes.labels, exclude_self=False)
        elif task == "sv-object-retrieval":
            sv = probes.sv_obj.flatten(0, 1)
            results[task] = mean_average_precision(sv, view_objects, sv, view_objects, exclude_self=True)
        elif task == "mv-object-retrieval":
            results[task] = mean_average_precision(probes.mv_obj_first, objects, probes.mv_obj_last, objects, exclude_self=False)
        else:
            raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    return results


def object_space_spread(sv_obj: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """Training progress signal (paper Fig. 6): mean d_intra_max, mean d_inter_min and rho = their ratio.

    d_intra_max: the largest distance between two views of an object; d_inter_min:
    the smallest distance from a view of the object to a view of another object
    of the same category. Objects alone in their category have no d_inter_min and are left out of both means.
    """
    n, v, _ = sv_obj.shape
    flat = sv_obj.flatten(0, 1).float()
    owners = torch.arange(n, device=sv_obj.device).repeat_interleave(v)
    view_labels = labels.repeat_interleave(v)
    intra, inter = [], []
    for i in range(n):
        rows = flat[i * v : (i + 1) * v]
        dist = _distances(rows, flat)  # (v, N*v)
        same_category_other = (view_labels == labels[i]) & (owners != i)
        if not bool(same_category_other.any()):
            continue
        intra.append(dist[:, i * v : (i + 1) * v].max())
        inter.append(dist[:, same_category_other].min())
    if not intra:
        return float("nan"), float("nan"), float("nan")
    intra_max = float(torch.stack(intra).mean())
    inter_min = float(torch.stack(inter).mean())
    return intra_max, inter_min, inter_min / max(intra_max, 1e-12)
