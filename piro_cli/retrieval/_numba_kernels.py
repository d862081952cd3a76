"""The CPU kernels of piro_cli.retrieval.metrics, compiled by numba (on first use; cached on disk).

Imported only when a CPU ranking runs, so that importing piro does not import numba. Every kernel takes
raw float32 products s = q . x and forms the ranking key as xx[j] - 2 s in float32, exactly as the torch
path does. See metrics.py for the ranking rule and what the kernels compute.
"""

from __future__ import annotations

import numba
import numpy as np

njit = numba.njit(nogil=True, cache=True)
inline = numba.njit(nogil=True, cache=True, inline="always")
two = np.float32(2.0)


@inline
def insert(best_key, best_index, count, k, v, j):
    # (key, index) pairs kept sorted; items arrive in index order and only a strictly smaller key gets in
    # past a full list, so among equal keys the lower index stays first. Returns the new count.
    p = count if count < k else k - 1
    while p > 0 and best_key[p - 1] > v:
        best_key[p] = best_key[p - 1]
        best_index[p] = best_index[p - 1]
        p -= 1
    best_key[p] = v
    best_index[p] = j
    return count + 1 if count < k else count


@njit
def topk_rows(products, xx, k, out, r0, r1):
    """The k nearest items of rows r0..r1 of a chunk of products (queries x every item)."""
    n = products.shape[1]
    best_key = np.empty(k, np.float32)
    best_index = np.empty(k, np.int64)
    for i in range(r0, r1):
        count = 0
        worst = np.float32(np.inf)
        row = products[i]
        for j in range(n):
            v = xx[j] - two * row[j]
            if v < worst or count < k:
                count = insert(best_key, best_index, count, k, v, j)
                if count == k:
                    worst = best_key[k - 1]
        for t in range(k):
            out[i, t] = best_index[t]


@inline
def bucket_of(v, lo, scale, nb):
    # 0 .. nb + 2 and non-decreasing in v (float32 arithmetic, clamped): the one property the counting relies on
    t = (v - lo) * scale
    t = min(max(t, np.float32(-1.0)), np.float32(nb + 1))
    return np.int64(t + np.float32(1.0))


@njit
def bucket_table(sorted_key, R, nb, start_of, count):
    # Buckets over the sorted relevant keys: start_of[b] relevant keys lie in buckets before b, count[b] in b.
    # A bucket without relevant keys sits entirely between two of them, so every item in it has exactly
    # start_of[b] relevant items ahead; only buckets holding relevant keys need (key, index) comparisons.
    lo = sorted_key[0]
    span = np.float64(sorted_key[R - 1]) - np.float64(lo)
    scale = np.float32(nb / span) if span > 1e-30 else np.float32(0.0)
    for b in range(nb + 3):
        count[b] = 0
    for p in range(R):
        count[bucket_of(sorted_key[p], lo, scale, nb)] += 1
    acc = 0
    for b in range(nb + 3):
        start_of[b] = acc
        acc += count[b]
    return lo, scale


@inline
def ahead_of(v, j, b, sorted_key, sorted_index, R, start_of, count):
    # how many relevant items rank before the item (key v, index j), which falls in bucket b
    p = start_of[b]
    if count[b] > 0:
        while p < R and (sorted_key[p] < v or (sorted_key[p] == v and sorted_index[p] < j)):
            p += 1
    return p


@njit
def finish(before, R, drop_first):
    # AP = mean over the relevant items of (m relevant up to here) / (rank), rank = m + other items ahead.
    # drop_first: the ranking's first item is left out: an irrelevant one when some lead (one fewer ahead
    # of every relevant item), else the first relevant one.
    ahead = 0
    skip = 0
    if drop_first:
        if before[0] > 0:
            ahead = -1
        else:
            skip = 1
    if R <= skip:
        return 0.0
    total = 0.0
    for m in range(1, R + 1):
        ahead += before[m - 1]
        if m > skip:
            total += (m - skip) / (m - skip + ahead)
    return total / (R - skip)


@njit
def ap_rows(products, xx, item_ids, query_ids, out, r0, r1):
    """AP of rows r0..r1 of a chunk of products (queries x every item); relevant = same id."""
    n = products.shape[1]
    rel_key = np.empty(n, np.float32)
    rel_index = np.empty(n, np.int64)
    start_of = np.empty(8 * n + 3, np.int64)
    count = np.empty(8 * n + 3, np.int64)
    before = np.empty(n + 1, np.int64)
    keys = np.empty(n, np.float32)
    bucket = np.empty(n, np.int64)
    for i in range(r0, r1):
        qid = query_ids[i]
        row = products[i]
        for j in range(n):
            keys[j] = xx[j] - two * row[j]
        R = 0
        for j in range(n):
            if item_ids[j] == qid:
                rel_key[R] = keys[j]
                rel_index[R] = j
                R += 1
        if R == 0:
            out[i] = 0.0
            continue
        order = np.argsort(rel_key[:R], kind="mergesort")  # stable: equal keys stay in index order
        sorted_key = rel_key[:R][order]
        sorted_index = rel_index[:R][order]
        nb = 8 * R
        lo, scale = bucket_table(sorted_key, R, nb, start_of, count)
        for j in range(n):  # vectorised
            bucket[j] = bucket_of(keys[j], lo, scale, nb)
        before[: R + 1] = 0
        for j in range(n):
            if item_ids[j] != qid:
                before[ahead_of(keys[j], j, bucket[j], sorted_key, sorted_index, R, start_of, count)] += 1
        out[i] = finish(before, R, False)


@njit
def self_update(products, row0, col0, xx, k, exclude_self, nearest, want_ap, relevant, max_relevant, r0, r1):
    """Rows row0 + r (r in r0..r1) against columns col0 .. col0 + width of one block of the symmetric product:
    merge into their running k nearest (`nearest`: best_key, best_index, filled), and count the other items ahead
    of each relevant one (AP; `relevant`: ids, offsets, rel_key, rel_index, before)."""
    best_key, best_index, filled = nearest
    ids, offsets, rel_key, rel_index, before = relevant
    width = products.shape[1]
    start_of = np.empty(8 * max_relevant + 3, np.int64)
    count = np.empty(8 * max_relevant + 3, np.int64)
    keys = np.empty(width, np.float32)
    bucket = np.empty(width, np.int64)
    for r in range(r0, r1):
        i = row0 + r
        row = products[r]
        for t in range(width):
            keys[t] = xx[col0 + t] - two * row[t]
        if k > 0:
            bk = best_key[i]
            bi = best_index[i]
            c = filled[i]
            worst = bk[k - 1] if c == k else np.float32(np.inf)
            for t in range(width):
                v = keys[t]
                if v < worst or c < k:
                    j = col0 + t
                    if exclude_self and j == i:
                        continue
                    c = insert(bk, bi, c, k, v, j)
                    if c == k:
                        worst = bk[k - 1]
            filled[i] = c
        if want_ap:
            a = offsets[i]
            R = offsets[i + 1] - a
            if R == 0:
                continue
            sorted_key = rel_key[a : a + R]
            sorted_index = rel_index[a : a + R]
            nb = 8 * R
            lo, scale = bucket_table(sorted_key, R, nb, start_of, count)
            for t in range(width):  # vectorised
                bucket[t] = bucket_of(keys[t], lo, scale, nb)
            counters = before[a + i : a + i + R + 1]
            qid = ids[i]
            for t in range(width):
                j = col0 + t
                if ids[j] != qid:  # relevant items (and the query itself) come from _relevant_keys
                    counters[ahead_of(keys[t], j, bucket[t], sorted_key, sorted_index, R, start_of, count)] += 1


@njit
def finish_ap(offsets, before, out, drop_first):
    for i in range(len(out)):
        a = offsets[i]
        R = offsets[i + 1] - a
        out[i] = finish(before[a + i : a + i + R + 1], R, drop_first) if R > 0 else 0.0


@njit
def rerank_rows(lower, upper, x, xx64, queries, k, out, r0, r1):
    """For rows r0..r1: among the items whose lower bound `lower[i, j]` is at most `upper[i]` (the bf16 pass's
    candidates), the k nearest by float64 keys ||x||^2 - 2 q.x (exact to float64 rounding), ties to the lower index.
    The candidate rows of `x` are read in place."""
    n, d = x.shape
    best_key = np.empty(k, np.float64)
    best_index = np.empty(k, np.int64)
    for i in range(r0, r1):
        count = 0
        worst = np.inf
        limit = upper[i]
        q = queries[i]
        for j in range(n):
            if lower[i, j] > limit:
                continue
            row = x[j]
            dot = 0.0
            for t in range(d):
                dot += np.float64(row[t]) * np.float64(q[t])
            v = xx64[j] - 2.0 * dot
            if v < worst or count < k:
                count = insert(best_key, best_index, count, k, v, j)
                if count == k:
                    worst = best_key[k - 1]
        for t in range(k):
            out[i, t] = best_index[t]
