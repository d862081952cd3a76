"""Exact ranking kernels of the PICR tasks: k nearest neighbours and average precision, in chunks.

Ranking rule, for every task
----------------------------
Items are ranked by Euclidean distance to the query, nearest first. Items at exactly the same distance
are ranked by their index, lower first, so results never depend on the hardware, the chunk size or the
thread count.

Distances are compared through the key ``key_ij = ||x_j||^2 - 2 q_i . x_j`` in float32 (the dot products
from one matrix product per chunk; the key is ``fl(||x_j||^2 - 2 fl(q_i . x_j))`` on every backend). It
equals ``||q_i - x_j||^2 - ||q_i||^2``, so for a given query it orders the items exactly as the distance
does, with one rounding fewer. "Exactly the same distance" means equal float32 keys: equal embeddings
give equal keys whenever their float32 dot products are exact (small integer-valued embeddings, as in
the tests); with general floating-point embeddings two duplicates can differ in the last bit, depending
on the BLAS blocking.

What is computed
----------------
- `rank(...)`: for every query its k nearest items (ties as above) and/or the average precision (AP) of
  the full ranking, an item being relevant when its id equals the query's. AP is the mean, over the
  relevant items, of the precision at each one's rank (the released code's `average_precision`); a query
  without relevant items scores 0. `items=None` ranks the queries against each other; `exclude_self`
  then leaves query i out of its own ranking, `drop_first` leaves out the first item of it instead (the
  query itself unless an item at the same distance has a lower index: the released code's way, which
  searches the full ranking and drops its first hit).
- `vote(...)`: the majority label of each query's neighbours; a tie goes to the smallest tied label (the
  released code's `argmax(bincount)`), or with `tie_break="nearest"` to the tied label whose nearest
  member ranks first.

No approximate search and no reduced precision: every neighbour list and every AP is the one a full sort
of the float32 keys would give.

How it is fast
--------------
Memory stays bounded whatever the dataset size: keys exist only for one chunk of queries (or one block
of query x item pairs) at a time, sized to the device.

- GPU, or no numba: torch. A chunked matmul; `topk` (a tie across the k-th place falls back to a stable
  sort of that row); AP from a stable sort of each row.
- CPU: the float32 products come from numpy's BLAS (OpenBLAS: on the AMD EPYC this was tuned on it ran
  1.6-1.7x faster than the MKL inside torch), and the rest runs in numba kernels that read each product
  once, in as many threads as torch uses: the key, the top-k by insertion, and AP by counting, for each
  relevant item, how many items rank before it (the relevant keys sorted once per query, every other item
  dropped into a bucket between them) instead of sorting the row.
- CPU, queries ranked against themselves (SV object tasks, category retrievals): the key matrix is
  symmetric up to the per-item norm term, so only the blocks on and above the diagonal are multiplied
  (half the work) and each block serves its rows and, transposed, its columns. AP then needs the
  relevant keys of every query first: they come from one small product per id group.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from piro_cli.hardware import bf16_matmul_speedup
from piro_cli.retrieval.search import KNN_VOTES, vote

Progress = Callable[[int, int], None]

BACKENDS = ("torch", "numba")
CPU_CHUNK_BYTES = 256 * 2**20  # keys of one chunk of queries on the CPU
SELF_BLOCK = 4096  # side of the square blocks of the symmetric CPU path


@dataclass
class RankResult:
    """`neighbours`: (q, k) item indices, nearest first; `average_precision`: (q,) float64 in [0, 1]. On the CPU."""

    neighbours: torch.Tensor | None
    average_precision: torch.Tensor | None


# ----------------------------------------------------------------------------- public entry points


def rank(
    queries: torch.Tensor,
    items: torch.Tensor | None = None,
    *,
    k: int = 0,
    query_ids: torch.Tensor | None = None,
    item_ids: torch.Tensor | None = None,
    exclude_self: bool = False,
    drop_first: bool = False,
    backend: str | None = None,
    chunk_rows: int | None = None,
    progress: Progress | None = None,
    precision: str | None = None,
) -> RankResult:
    """Rank `items` (n, D) for every query (q, D), on the device of `queries`.

    items: None (or `queries` itself) ranks the queries against each other.
    k: how many nearest items to return (capped at the number of items; 0: no neighbour list).
    query_ids / item_ids: when given, the AP of every query (relevant = same id); item_ids defaults to
        query_ids when the queries are the items.
    exclude_self: leave query i out of its own ranking (the queries must be the items).
    drop_first: leave out the first item of query i's ranking instead (the queries must be the items): the
        query itself, or an item at the same distance with a lower index (an exact duplicate).
    backend: "torch" or "numba" (CPU only); default numba on a CPU when installed, else torch.
    chunk_rows: queries per chunk (CPU symmetric path: block side); default sized to the device.
    progress: callback(done, total) in units of work.
    precision: how the CPU (numba backend) finds the k nearest of queries against other items, without AP: "bf16"
        (a bf16 pass keeps a provably sufficient candidate set, then exact keys rank it: `_rank_bf16`), "fp32", or
        None: bf16 where the CPU computes it natively (AVX512-BF16 / AMX) and a bf16 product measured at least
        twice as fast as float32 (piro_cli.hardware.bf16_matmul_speedup), for large galleries; else fp32.
    """
    self_mode = items is None or items is queries
    items = queries if self_mode else items
    if queries.dim() != 2 or items.dim() != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and items {tuple(items.shape)} must be (q, D) and (n, D)")
    if (exclude_self or drop_first) and not self_mode:
        raise ValueError("exclude_self and drop_first need the queries to be the items (pass items=None)")
    if exclude_self and drop_first:
        raise ValueError("exclude_self and drop_first each leave one item out of a ranking; pass one of them")
    device = queries.device
    items = items.to(device)
    num_q, num_items = len(queries), len(items)
    want_ap = query_ids is not None
    if want_ap:
        item_ids = query_ids if (item_ids is None and self_mode) else item_ids
        if item_ids is None or len(query_ids) != num_q or len(item_ids) != num_items:
            raise ValueError("query_ids and item_ids must give one id per query and per item")
    available = num_items - (1 if exclude_self or drop_first else 0)
    neighbours = found = None
    if k > 0:
        k = min(int(k), available)
        # drop_first: the k + 1 nearest, the first of them dropped below
        found = torch.empty((num_q, k + (1 if drop_first and k else 0)), dtype=torch.int64)
        neighbours = found[:, 1:] if drop_first and k else found
    else:
        k = 0
    search_k = found.shape[1] if found is not None else 0
    ap = torch.empty(num_q, dtype=torch.float64) if want_ap else None
    if num_q == 0 or (not k and not want_ap):
        return RankResult(neighbours, ap)

    backend = _pick_backend(device, backend)
    q32 = queries.float().contiguous()
    x32 = q32 if self_mode else items.float().contiguous()
    if precision not in (None, "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
    bf16 = k > 0 and not want_ap and not self_mode and backend == "numba" and not (exclude_self or drop_first)
    if precision is None:  # only where measured faster: emulated bf16 (AVX2 CPUs) is several times slower
        bf16 = bf16 and num_items >= BF16_MIN_ITEMS and queries.shape[1] >= 64 and bf16_matmul_speedup() >= 2.0
    else:
        bf16 = bf16 and precision == "bf16"
    with _full_fp32():
        if bf16:
            _rank_bf16(q32, x32, search_k, found, progress, chunk_rows)
        elif backend == "numba" and self_mode:
            _rank_self_numba(q32, search_k, _ids(query_ids), exclude_self, drop_first, found, ap, progress, chunk_rows)
        elif backend == "numba":
            _rank_numba(q32, x32, search_k, _ids(query_ids), _ids(item_ids), found, ap, progress, chunk_rows)
        else:
            _rank_torch(q32, x32, search_k, query_ids, item_ids, exclude_self, drop_first, found, ap, progress, chunk_rows)
    return RankResult(neighbours.contiguous() if neighbours is not None else None, ap)


def knn_vote_accuracy(
    queries: torch.Tensor,
    q_labels: torch.Tensor,
    items: torch.Tensor,
    i_labels: torch.Tensor,
    k: int = KNN_VOTES,
    tie_break: str = "smallest",
    **kwargs,
) -> float:
    """Percent of queries whose k-NN majority vote (see `vote`) is their label."""
    result = rank(queries, items, k=k, **kwargs)
    predicted = vote(i_labels.cpu()[result.neighbours], tie_break)
    return 100.0 * float((predicted == q_labels.cpu()).double().mean()) if len(queries) else float("nan")


def nearest_accuracy(
    queries: torch.Tensor, q_ids: torch.Tensor, items: torch.Tensor | None, i_ids: torch.Tensor, exclude_self: bool, **kwargs
) -> float:
    """Percent of queries whose nearest item has their id (the query itself left out with `exclude_self`)."""
    result = rank(queries, items, k=1, exclude_self=exclude_self, **kwargs)
    if result.neighbours is None or result.neighbours.shape[1] == 0:
        return 0.0
    nearest = i_ids.cpu()[result.neighbours[:, 0]]
    return 100.0 * float((nearest == q_ids.cpu()).double().mean())


def mean_average_precision(
    queries: torch.Tensor, q_ids: torch.Tensor, items: torch.Tensor | None, i_ids: torch.Tensor, exclude_self: bool, **kwargs
) -> float:
    """mAP in percent (relevant = same id); a query without relevant items counts as 0."""
    result = rank(queries, items, query_ids=q_ids, item_ids=i_ids, exclude_self=exclude_self, **kwargs)
    return 100.0 * float(result.average_precision.mean()) if len(queries) else float("nan")


def numba_available() -> bool:
    return _numba_kernels() is not None


# ----------------------------------------------------------------------------- shared helpers


def _pick_backend(device: torch.device, requested: str | None) -> str:
    if requested is None:
        return "numba" if device.type == "cpu" and numba_available() else "torch"
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested == "numba" and (device.type != "cpu" or not numba_available()):
        raise ValueError("the numba backend needs CPU tensors and numba installed")
    return requested


@contextmanager
def _full_fp32():
    """Plain float32 matmuls (no TF32 or bf16 shortcuts), whatever the caller set globally."""
    precision = torch.get_float32_matmul_precision()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.set_float32_matmul_precision(precision)


def _ids(ids: torch.Tensor | None) -> np.ndarray | None:
    return None if ids is None else np.ascontiguousarray(ids.detach().cpu().numpy().astype(np.int64, copy=False))


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x, dtype=np.float32)


def _rows_per_chunk(num_items: int, device: torch.device, bytes_per_cell: int, requested: int | None) -> int:
    if requested:
        return max(1, int(requested))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = max(free // 4, 64 * 2**20)
    else:
        budget = CPU_CHUNK_BYTES
    return int(max(1, min(8192, budget // max(1, num_items * bytes_per_cell))))


def _in_threads(kernel, num_rows: int, *args) -> None:
    """kernel(*args, r0, r1) on contiguous row blocks, one per torch thread (the kernels release the GIL)."""
    threads = min(max(1, torch.get_num_threads()), max(1, num_rows))
    if threads == 1:
        kernel(*args, 0, num_rows)
        return
    bounds = np.linspace(0, num_rows, threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(kernel, *args, int(bounds[t]), int(bounds[t + 1])) for t in range(threads)]
        for future in futures:
            future.result()


# ----------------------------------------------------------------------------- torch path (GPU, or no numba)


def _rank_torch(q32, x32, k, query_ids, item_ids, exclude_self, drop_first, neighbours, ap, progress, chunk_rows) -> None:
    device = q32.device
    num_q, num_items = len(q32), len(x32)
    rows = _rows_per_chunk(num_items, device, 40 if ap is not None else 16, chunk_rows)
    xx = torch.from_numpy(_sq_norms(x32.numpy())) if device.type == "cpu" else (x32 * x32).sum(1)
    if ap is not None:
        qids, iids = query_ids.to(device), item_ids.to(device)
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        if device.type == "cpu":  # the same BLAS as the numba path, so both see the same keys
            products = torch.from_numpy(q32[start:stop].numpy() @ x32.numpy().T)
        else:
            products = q32[start:stop] @ x32.T
        keys = torch.sub(xx, products, alpha=2.0)
        del products
        local = torch.arange(stop - start, device=device)
        if exclude_self:
            keys[local, local + start] = float("inf")
        if k:
            neighbours[start:stop] = _topk_torch(keys, k).cpu()
        if ap is not None:
            relevant = iids.unsqueeze(0) == qids[start:stop].unsqueeze(1)
            if exclude_self:
                relevant[local, local + start] = False
            ap[start:stop] = _ap_torch(keys, relevant, drop_first).cpu()
        if progress is not None:
            progress(stop, num_q)


def _topk_torch(keys: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest keys of each row, ordered by (key, index); exact under ties."""
    m = min(k + 1, keys.shape[1])
    values, index = torch.topk(keys, m, dim=1, largest=False, sorted=True)
    # topk's choice among equal keys is arbitrary: a tie across the k-th place needs the full stable order
    boundary_tie = values[:, k] == values[:, k - 1] if m > k else torch.zeros(len(keys), dtype=torch.bool, device=keys.device)
    values, index = values[:, :k], index[:, :k]
    by_index = torch.argsort(index, dim=1)
    values, index = values.gather(1, by_index), index.gather(1, by_index)
    index = index.gather(1, torch.sort(values, dim=1, stable=True).indices)
    if bool(boundary_tie.any()):
        rows = boundary_tie.nonzero().squeeze(1)
        index[rows] = torch.sort(keys[rows], dim=1, stable=True).indices[:, :k]
    return index


def _ap_torch(keys: torch.Tensor, relevant: torch.Tensor, drop_first: bool = False) -> torch.Tensor:
    order = torch.sort(keys, dim=1, stable=True).indices  # equal keys keep index order
    hits = relevant.gather(1, order)
    del order
    if drop_first:
        hits = hits[:, 1:]
    found = hits.cumsum(1, dtype=torch.float64)
    positions = torch.arange(1, hits.shape[1] + 1, device=keys.device, dtype=torch.float64)
    precision_sum = ((found / positions) * hits).sum(1)
    num_relevant = hits.sum(1)
    return torch.where(num_relevant > 0, precision_sum / num_relevant.clamp(min=1), torch.zeros_like(precision_sum))


# ----------------------------------------------------------------------------- bf16 candidates, float32 ranking (CPU)

BF16_UNIT = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
F32_UNIT = 2.0**-24
BF16_MIN_ITEMS = 4096  # below this the float32 product is cheap: no second pass is worth it


def bf16_key_slack(dim: int) -> tuple[float, float]:
    """(a, b) such that |approximate key - float32 key| <= a * ||q|| * ||x|| + b * ||x||^2 for every query q and item x.

    The approximate key is fl32(||x||^2 - 2 s~) with s~ the bf16 product: q and x rounded to bf16 (relative error
    u = 2^-8 each, so their products carry 2u + u^2), summed in float32 (gamma_D = D 2^-24 / (1 - D 2^-24) of the
    sum of |products|, which Cauchy-Schwarz bounds by (1 + u)^2 ||q|| ||x||) and rounded to bf16 once more (u). The
    float32 key the other paths rank by differs from the exact one by the float32 product's gamma_D and the
    subtraction's rounding (so the bound holds against the float32 keys and, a fortiori, the exact ones). Each error
    in s counts twice in the key; a 25% margin covers the higher-order terms."""
    u, gamma = BF16_UNIT, dim * F32_UNIT / (1 - dim * F32_UNIT)
    approximate = (2 * u + u * u) + gamma * (1 + u) ** 2 + u * (1 + u) ** 2 * (1 + gamma)
    reference = gamma
    a = 1.25 * (2 * (approximate + reference) + 4 * F32_UNIT)
    b = 1.25 * 2 * F32_UNIT
    return a, b


def _rank_bf16(q32, x32, k, neighbours, progress, chunk_rows) -> None:
    """k nearest items of each query: a bf16 product gives approximate keys with a proven error bound (above); every
    item whose key could be among the k smallest (approximate key - bound <= the k-th smallest approximate key +
    bound) is a candidate, and the candidates are ranked by float64 keys, ties by index. That is the exact order of
    the distances: where the float32 path's rounding (about 1e-7 of a key) swaps two nearly equidistant items, this
    path has them in their true order; everywhere else the two agree."""
    kernels = _numba_kernels()
    qn, xn = q32.numpy(), x32.numpy()
    xx = _sq_norms(xn)
    xx64 = np.einsum("ij,ij->i", xn, xn, dtype=np.float64)
    x_norm, q_norm = np.sqrt(xx), np.sqrt(_sq_norms(qn))
    a, b = bf16_key_slack(xn.shape[1])
    xb = x32.to(torch.bfloat16)
    num_q, num_items = len(qn), len(xn)
    rows = _rows_per_chunk(num_items, q32.device, 12, chunk_rows)
    out = neighbours.numpy()
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        approx = torch.matmul(q32[start:stop].to(torch.bfloat16), xb.T).float().numpy()
        approx *= -2.0
        approx += xx[None, :]
        slack = np.multiply.outer(a * q_norm[start:stop], x_norm)
        slack += b * xx[None, :]
        upper = np.partition(approx + slack, k - 1, axis=1)[:, k - 1]  # >= the k-th smallest key
        approx -= slack  # now a lower bound of every key
        del slack
        _in_threads(kernels.rerank_rows, stop - start, approx, upper, xn, xx64, qn[start:stop], k, out[start:stop])
        if progress is not None:
            progress(stop, num_q)


# ----------------------------------------------------------------------------- numba path (CPU)


def _rank_numba(q32, x32, k, query_ids, item_ids, neighbours, ap, progress, chunk_rows) -> None:
    """Queries against other items: chunks of whole rows."""
    kernels = _numba_kernels()
    qn, xn = q32.numpy(), x32.numpy()
    xx = _sq_norms(xn)
    num_q, num_items = len(qn), len(xn)
    rows = _rows_per_chunk(num_items, q32.device, 4, chunk_rows)
    buffer = np.empty((min(rows, num_q), num_items), dtype=np.float32)
    nn_np = neighbours.numpy() if k else None
    ap_np = ap.numpy() if ap is not None else None
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        products = np.matmul(qn[start:stop], xn.T, out=buffer[: stop - start])
        if k:
            _in_threads(kernels.topk_rows, stop - start, products, xx, k, nn_np[start:stop])
        if ap_np is not None:
            _in_threads(kernels.ap_rows, stop - start, products, xx, item_ids, query_ids[start:stop], ap_np[start:stop])
        if progress is not None:
            progress(stop, num_q)


def _relevant_keys(xn: np.ndarray, xx: np.ndarray, ids: np.ndarray, exclude_self: bool):
    """For every row, the keys of its relevant items (same id; itself too unless excluded), sorted by (key, index).

    CSR layout: row i's keys are key[offsets[i]:offsets[i + 1]], their item indices index[...]."""
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], n]
    sizes = np.empty(n, dtype=np.int64)
    for s, e in zip(starts, ends, strict=True):
        sizes[order[s:e]] = (e - s) - (1 if exclude_self else 0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    keys = np.empty(offsets[-1], dtype=np.float32)
    index = np.empty(offsets[-1], dtype=np.int64)
    two = np.float32(2.0)
    for s, e in zip(starts, ends, strict=True):
        group = order[s:e]  # ascending item indices (stable argsort)
        m = len(group)
        block = max(1, (16 * 2**20) // max(1, m))
        members = xn[group]
        for a in range(0, m, block):
            rows = group[a : a + block]
            group_keys = xx[group][None, :] - two * (xn[rows] @ members.T)
            if exclude_self:
                group_keys[np.arange(len(rows)), np.arange(a, a + len(rows))] = np.inf
            by_key = np.argsort(group_keys, axis=1, kind="stable")[:, : m - (1 if exclude_self else 0)]
            targets = offsets[rows][:, None] + np.arange(by_key.shape[1])
            keys[targets] = np.take_along_axis(group_keys, by_key, axis=1)
            index[targets] = group[by_key]
    return offsets, keys, index


def _rank_self_numba(x32, k, ids, exclude_self, drop_first, neighbours, ap, progress, block) -> None:
    """Queries against themselves: only the blocks on and above the diagonal are multiplied."""
    kernels = _numba_kernels()
    xn = x32.numpy()
    n = len(xn)
    xx = _sq_norms(xn)
    side = max(1, int(block or SELF_BLOCK))
    want_ap = ap is not None
    if want_ap:
        offsets, rel_key, rel_index = _relevant_keys(xn, xx, ids, exclude_self)
        max_relevant = int(np.diff(offsets).max()) if n else 0
        before = np.zeros(offsets[-1] + n, dtype=np.int64)  # row i: R_i + 1 counters from offsets[i] + i
    else:
        ids = np.zeros(0, dtype=np.int64)
        offsets, rel_key, rel_index, max_relevant = np.zeros(1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), 0
        before = np.zeros(0, dtype=np.int64)
    best_key = np.full((n, max(k, 1)), np.inf, dtype=np.float32)
    best_index = np.full((n, max(k, 1)), -1, dtype=np.int64)
    filled = np.zeros(n, dtype=np.int64)
    buffer = np.empty(min(side, n) ** 2, dtype=np.float32)
    transposed = np.empty_like(buffer)
    starts = list(range(0, n, side))
    total = len(starts) * (len(starts) + 1) // 2
    done = 0

    def update(products, row0, col0):
        _in_threads(
            kernels.self_update, len(products), products, row0, col0, xx, k, exclude_self, (best_key, best_index, filled),
            want_ap, (ids, offsets, rel_key, rel_index, before), max_relevant,
        )  # fmt: skip

    for bi, r0 in enumerate(starts):
        r1 = min(r0 + side, n)
        for c0 in starts[bi:]:
            c1 = min(c0 + side, n)
            products = np.matmul(xn[r0:r1], xn[c0:c1].T, out=_view(buffer, r1 - r0, c1 - c0))
            update(products, r0, c0)
            if c0 != r0:
                flipped = _view(transposed, c1 - c0, r1 - r0)
                np.copyto(flipped, products.T)
                update(flipped, c0, r0)
            done += 1
            if progress is not None:
                progress(done, total)
    if k:
        neighbours.copy_(torch.from_numpy(best_index[:, :k]))
    if want_ap:
        kernels.finish_ap(offsets, before, ap.numpy(), drop_first)


def _view(buffer: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A C-contiguous (rows, cols) array over the start of a flat buffer."""
    return buffer[: rows * cols].reshape(rows, cols)


@functools.cache
def _numba_kernels() -> SimpleNamespace | None:
    """The CPU kernels (piro_cli/retrieval/_numba_kernels.py), imported on first use; None without numba."""
    try:
        from piro_cli.retrieval import _numba_kernels as kernels
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return None
    return SimpleNamespace(topk_rows=kernels.topk_rows, ap_rows=kernels.ap_rows, self_update=kernels.self_update,
                           finish_ap=kernels.finish_ap, rerank_rows=kernels.rerank_rows)  # fmt: skip
