"""The PICR kernels and tasks against brute force written the obvious way: explicit loops over every pair,
Python's `sorted` with the documented tie rule (distance, then item index), and scikit-learn's
`average_precision_score`. Small random cases with exact ties (integer-valued and duplicated embeddings),
a category with a single object, 1-view objects, default and strict protocols, both vote tie rules.
(tests/test_released_protocol.py checks the default protocol against the released code's procedure.)"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from piro_cli.errors import DataError
from piro_cli.models.embedding import EmbeddingSet
from piro_cli.retrieval.metrics import mean_average_precision, nearest_accuracy, rank, vote
from piro_cli.retrieval.picr import TASKS, evaluate_picr, parse_tasks, run_picr

BACKENDS = ["torch", "numba"]


# ----------------------------------------------------------------------------- brute force


def distance(a, b) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))


def ranking(query, items, exclude: int | None = None, drop_first: bool = False) -> list[int]:
    """Every item index, nearest first; equal distances by index; `exclude` left out, or the first item dropped."""
    candidates = [j for j in range(len(items)) if j != exclude]
    order = sorted(candidates, key=lambda j: (distance(query, items[j]), j))
    return order[1:] if drop_first else order


def majority(labels_in_rank_order: list[int], tie_break: str = "smallest") -> int:
    """The most frequent label; a tie to the smallest label, or ("nearest") to the tied label seen first."""
    counts = Counter(labels_in_rank_order)
    best = max(counts.values())
    tied = [label for label in labels_in_rank_order if counts[label] == best]
    return min(tied) if tie_break == "smallest" else tied[0]


def loop_ap(relevance: list[bool]) -> float:
    hits, precisions = 0, []
    for position, relevant in enumerate(relevance, start=1):
        if relevant:
            hits += 1
            precisions.append(hits / position)
    return sum(precisions) / len(precisions) if precisions else 0.0


def sklearn_ap(relevance: list[bool]) -> float:
    if not any(relevance):
        return 0.0
    scores = -np.arange(len(relevance), dtype=float)  # the ranking as strictly decreasing scores
    return float(average_precision_score(np.asarray(relevance, dtype=int), scores))


def as_lists(t: torch.Tensor) -> list[list[float]]:
    return t.double().tolist()


def brute_picr(gallery: EmbeddingSet, probes: EmbeddingSet, strict: bool, tie_break: str = "smallest") -> dict[str, float]:
    n, v = probes.sv_cat.shape[:2]
    g, gv = gallery.sv_cat.shape[:2]
    labels = probes.labels.tolist()
    g_labels = gallery.labels.tolist()
    view_label = [labels[i] for i in range(n) for _ in range(v)]
    view_object = [i for i in range(n) for _ in range(v)]
    g_view_label = [g_labels[i] for i in range(g) for _ in range(gv)]
    sv_cat = as_lists(probes.sv_cat.flatten(0, 1))
    sv_obj = as_lists(probes.sv_obj.flatten(0, 1))
    g_sv_cat = as_lists(gallery.sv_cat.flatten(0, 1))
    mv_cat, g_mv_cat = as_lists(probes.mv_cat), as_lists(gallery.mv_cat)
    first, last = as_lists(probes.mv_obj_first), as_lists(probes.mv_obj_last)
    out: dict[str, list[float]] = {t: [] for t in TASKS}
    for a, query in enumerate(sv_cat):
        order = ranking(query, g_sv_cat)[:10]
        out["sv-category-recognition"].append(majority([g_view_label[j] for j in order], tie_break) == view_label[a])
        order = ranking(query, sv_cat, exclude=a if strict else None)
        out["sv-category-retrieval"].append(check_ap([view_label[j] == view_label[a] for j in order]))
    for a, query in enumerate(sv_obj):
        # default: the full ranking with its first hit dropped (the released code's); strict: the query left out
        order = ranking(query, sv_obj, exclude=a) if strict else ranking(query, sv_obj, drop_first=True)
        out["sv-object-recognition"].append(bool(order) and view_object[order[0]] == view_object[a])
        out["sv-object-retrieval"].append(check_ap([view_object[j] == view_object[a] for j in order]))
    for i in range(n):
        order = ranking(mv_cat[i], g_mv_cat)[:10]
        out["mv-category-recognition"].append(majority([g_labels[j] for j in order], tie_break) == labels[i])
        order = ranking(mv_cat[i], mv_cat, exclude=i if strict else None)
        out["mv-category-retrieval"].append(check_ap([labels[j] == labels[i] for j in order]))
        order = ranking(last[i], first)  # queries: o_mv of views [V//2:]; gallery: o_mv of views [:V//2]
        out["mv-object-recognition"].append(order[0] == i)
        out["mv-object-retrieval"].append(check_ap([j == i for j in order]))
    return {t: 100.0 * sum(map(float, values)) / len(values) for t, values in out.items()}


def check_ap(relevance: list[bool]) -> float:
    ap = loop_ap(relevance)
    assert ap == pytest.approx(sklearn_ap(relevance), abs=1e-12)
    return ap


# ----------------------------------------------------------------------------- random cases


def integer_points(rng: np.random.Generator, n: int, dim: int, values=(-1, 0, 1)) -> torch.Tensor:
    """Small integer coordinates: float32 keys are exact and many distances tie exactly; some rows duplicated."""
    points = rng.choice(values, size=(n, dim)).astype(np.float32)
    dup = rng.choice(n, size=n // 4, replace=False)
    points[dup] = points[rng.choice(n, size=len(dup))]
    return torch.from_numpy(points)


def unit_points(rng: np.random.Generator, n: int, dim: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32)), dim=1)


def make_points(kind: str, rng, n: int, dim: int) -> torch.Tensor:
    return integer_points(rng, n, dim) if kind == "integer" else unit_points(rng, n, dim)


def make_set(rng, labels: list[int], views: int, dim: int, kind: str) -> EmbeddingSet:
    n = len(labels)

    def pts(shape_n):
        return make_points(kind, rng, shape_n, dim)

    return EmbeddingSet(
        sv_cat=pts(n * views).reshape(n, views, dim),
        sv_obj=pts(n * views).reshape(n, views, dim),
        mv_cat=pts(n),
        mv_obj=pts(n),
        mv_obj_first=pts(n),
        mv_obj_last=pts(n),
        labels=torch.tensor(labels),
    )


# ----------------------------------------------------------------------------- kernels


# queries vs other items; queries ranked against themselves: all of them, the query left out, the first hit dropped
MODES = ["other items", "self", "self excluded", "first dropped"]


def setup(mode, kind, rng, n_items, n_queries, dim):
    """queries, items (None: the queries), and the rank() options of the mode."""
    items = make_points(kind, rng, n_items, dim)
    if mode == "other items":
        return make_points(kind, rng, n_queries, dim), items, {}
    return items, None, {"exclude_self": mode == "self excluded", "drop_first": mode == "first dropped"}


def expected_order(mode, i, query, everything) -> list[int]:
    return ranking(query, everything, exclude=i if mode == "self excluded" else None, drop_first=mode == "first dropped")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["integer", "unit"])
@pytest.mark.parametrize("mode", MODES)
def test_neighbours_match_brute_force(backend, kind, mode):
    rng = np.random.default_rng(1)
    for trial in range(3):
        queries, items, options = setup(mode, kind, rng, 40, 17, 3 if kind == "integer" else 5)
        everything = (queries if items is None else items).tolist()
        for k in (1, 4, 10):
            # small chunks / blocks: several chunks, and off-diagonal (transposed) blocks in the symmetric path
            got = rank(queries, items, k=k, backend=backend, chunk_rows=1 + trial * 3, **options)
            for i, q in enumerate(queries.tolist()):
                expected = expected_order(mode, i, q, everything)[:k]
                assert got.neighbours[i].tolist() == expected, (trial, k, i)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["integer", "unit"])
@pytest.mark.parametrize("mode", MODES)
def test_average_precision_matches_brute_force_and_sklearn(backend, kind, mode):
    rng = np.random.default_rng(2)
    for trial in range(3):
        queries, items, options = setup(mode, kind, rng, 45, 13, 3 if kind == "integer" else 4)
        everything = queries if items is None else items
        item_ids = torch.from_numpy(rng.integers(0, 2 + 3 * trial, size=len(everything)))
        if items is None:
            query_ids = item_ids
        else:
            query_ids = torch.from_numpy(rng.integers(0, 2 + 3 * trial + 2, size=len(queries)))  # some ids have no item
        got = rank(queries, items, query_ids=query_ids, item_ids=item_ids, backend=backend, chunk_rows=2 + 3 * trial,
                   **options)  # fmt: skip
        for i, q in enumerate(queries.tolist()):
            order = expected_order(mode, i, q, everything.tolist())
            relevance = [int(item_ids[j]) == int(query_ids[i]) for j in order]
            assert float(got.average_precision[i]) == pytest.approx(check_ap(relevance), abs=1e-12), (trial, i)


def test_all_keys_equal_and_long_tie_runs():
    items = torch.zeros(30, 4)
    items[::7] = 1.0
    ids = torch.arange(30) % 3
    for backend in ("torch", "numba"):
        got = rank(items, None, k=5, query_ids=ids, exclude_self=True, backend=backend, chunk_rows=8)
        for i in range(30):
            order = ranking(items[i].tolist(), items.tolist(), exclude=i)
            assert got.neighbours[i].tolist() == order[:5]
            assert float(got.average_precision[i]) == pytest.approx(loop_ap([int(ids[j]) == int(ids[i]) for j in order]))


def test_vote_tie_rules():
    labels = torch.tensor([[3, 1, 1, 3, 2], [0, 2, 2, 0, 0], [5, 4, 4, 5, 6], [7, 7, 7, 7, 7], [2, 1, 2, 1, 0]])
    # the released argmax(bincount): the smallest tied label; "nearest": the tied label ranked first
    assert vote(labels).tolist() == [1, 0, 4, 7, 1]
    assert [int(np.argmax(np.bincount(row))) for row in labels.tolist()] == [1, 0, 4, 7, 1]
    assert vote(labels, "nearest").tolist() == [3, 0, 5, 7, 2]
    for row in labels.tolist():
        for rule in ("smallest", "nearest"):
            assert majority(row, rule) == vote(torch.tensor([row]), rule)[0]
    with pytest.raises(ValueError, match="tie break"):
        vote(labels, "largest")


def test_nearest_rule_does_not_depend_on_the_label_numbering():
    rng = np.random.default_rng(4)
    labels = torch.from_numpy(rng.integers(0, 3, size=(200, 10)))
    renumbered = torch.tensor([2, 0, 1])[labels]  # 0 -> 2, 1 -> 0, 2 -> 1
    assert torch.equal(torch.tensor([2, 0, 1])[vote(labels, "nearest")], vote(renumbered, "nearest"))
    assert not torch.equal(torch.tensor([2, 0, 1])[vote(labels)], vote(renumbered))  # ties among 200 rows of 10


def test_first_dropped_is_the_query_unless_a_duplicate_ranks_first():
    x = torch.tensor([[0.0, 0], [3, 0], [0, 0], [3, 1], [0, 0]])  # 0, 2 and 4 coincide
    ids = torch.tensor([0, 1, 1, 0, 2])
    for backend in BACKENDS:
        got = rank(x, None, k=2, query_ids=ids, drop_first=True, backend=backend)
        # queries 2 and 4 rank 0, 2, 4, 1, 3 like query 0: item 0 is dropped and they themselves stay in
        assert got.neighbours.tolist() == [[2, 4], [3, 0], [2, 4], [1, 0], [2, 4]]
        # relevance after the drop: [0 0 0 1], [0 0 1 0], [1 0 1 0], [0 1 0 0], [0 1 0 0]
        assert got.average_precision.tolist() == pytest.approx([1 / 4, 1 / 3, 5 / 6, 1 / 2, 1 / 2])
        # leaving the query itself out instead: query 2 ranks 0, 4, 1, 3 and query 4 has no relevant item
        excluded = rank(x, None, query_ids=ids, exclude_self=True, backend=backend).average_precision
        assert excluded.tolist() == pytest.approx([1 / 4, 1 / 3, 1 / 3, 1 / 2, 0.0])


def test_k_larger_than_items_and_empty_queries():
    items = torch.eye(3)
    got = rank(items, None, k=10, exclude_self=True)
    assert got.neighbours.shape == (3, 2)
    assert rank(torch.empty(0, 3), items, k=2).neighbours.shape == (0, 2)
    single = rank(items[:1], None, k=1, query_ids=torch.tensor([0]), exclude_self=True)
    assert single.neighbours.shape == (1, 0) and float(single.average_precision[0]) == 0.0


def test_wrappers_and_bad_arguments():
    rng = np.random.default_rng(3)
    x = unit_points(rng, 20, 4)
    ids = torch.arange(20) // 4
    assert nearest_accuracy(x, ids, x, ids, exclude_self=True) == pytest.approx(
        100.0 * np.mean([ids[ranking(q, x.tolist(), exclude=i)[0]] == ids[i] for i, q in enumerate(x.tolist())])
    )
    assert 0.0 <= mean_average_precision(x, ids, x, ids, exclude_self=False) <= 100.0
    with pytest.raises(ValueError, match="exclude_self"):
        rank(x[:3], x, k=1, exclude_self=True)
    with pytest.raises(ValueError, match="drop_first"):
        rank(x[:3], x, k=1, drop_first=True)
    with pytest.raises(ValueError, match="pass one"):
        rank(x, None, k=1, exclude_self=True, drop_first=True)
    with pytest.raises(ValueError, match="backend"):
        rank(x, x, k=1, backend="faiss")


# ----------------------------------------------------------------------------- the eight tasks


CASES = {
    # name: (gallery labels, probe labels, views, dim, kind)
    "integer ties": ([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3], [0, 0, 1, 1, 2, 2, 3], 3, 3, "integer"),
    "single-object category": ([0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2, 2], [0, 0, 1, 1, 1, 2, 3], 4, 5, "unit"),
    "one view": ([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2], [0, 1, 1, 2, 2, 2], 1, 3, "integer"),
    "unit": ([0, 1, 2, 3] * 4, [3, 2, 1, 0, 0, 1, 2, 3, 1], 2, 6, "unit"),
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("strict", "tie_break"), [(False, "smallest"), (True, "smallest"), (False, "nearest")])
def test_every_task_matches_brute_force(case, strict, tie_break, backend):
    g_labels, p_labels, views, dim, kind = CASES[case]
    rng = np.random.default_rng(len(case))
    gallery = make_set(rng, g_labels, views, dim, kind)
    probes = make_set(rng, p_labels, views, dim, kind)
    got = evaluate_picr(gallery, probes, strict=strict, tie_break=tie_break, device="cpu", backend=backend)
    expected = brute_picr(gallery, probes, strict, tie_break)
    assert list(got) == list(TASKS)
    for task in TASKS:
        assert got[task] == pytest.approx(expected[task], abs=1e-9), task


def test_strict_changes_only_category_retrieval():
    # without duplicate views the first hit of an SV object ranking is the query itself: strict changes nothing there
    rng = np.random.default_rng(5)
    gallery = make_set(rng, [0, 1, 2] * 4, 3, 4, "unit")
    probes = make_set(rng, [0, 0, 1, 2, 2, 3], 3, 4, "unit")
    default = evaluate_picr(gallery, probes, device="cpu")
    strict = evaluate_picr(gallery, probes, strict=True, device="cpu")
    changed = {t for t in TASKS if default[t] != strict[t]}
    assert changed == {"sv-category-retrieval", "mv-category-retrieval"}
    # category 3 has one test object: alone with itself under the default protocol (AP 1), no relevant item when strict
    only = probes.labels == 3
    assert evaluate_picr(None, EmbeddingSet(None, None, probes.mv_cat[only], None, None, None, probes.labels[only]),
                         ["mv-category-retrieval"], device="cpu") == {"mv-category-retrieval": 100.0}  # fmt: skip


def test_task_selection_steps_and_errors():
    rng = np.random.default_rng(6)
    probes = make_set(rng, [0, 1, 1], 2, 3, "unit")
    run = run_picr(None, probes, ["sv-object-retrieval", "sv-object-recognition"], device="cpu")
    assert list(run.values) == ["sv-object-recognition", "sv-object-retrieval"]
    assert run.num_queries == {"sv-object-recognition": 6, "sv-object-retrieval": 6}
    assert len(run.steps) == 1 and run.seconds("sv-object-retrieval") >= 0
    with pytest.raises(DataError, match="gallery"):
        evaluate_picr(None, probes, ["sv-category-recognition"], device="cpu")
    probes.sv_obj[0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        evaluate_picr(None, probes, ["sv-object-recognition"], device="cpu")
    assert parse_tasks("all") == TASKS and parse_tasks("mv-object-retrieval,sv-category-recognition") == (
        "sv-category-recognition", "mv-object-retrieval")  # fmt: skip
    with pytest.raises(ValueError, match="unknown task 'sv-nope'"):
        parse_tasks(["sv-nope"])


# ----------------------------------------------------------------------------- bf16 candidates, float32 ranking


@pytest.mark.parametrize("kind", ["clustered", "duplicates", "integers"])
def test_bf16_candidates_give_the_float32_neighbours(kind):
    """The bf16 path (forced here; automatic only on CPUs with native bf16) returns the exact k nearest (a float64
    brute-force sort, ties by index), on clustered embeddings, exact duplicates and small-integer embeddings full of
    ties; the float32 path agrees wherever its own rounding does not swap two nearly equidistant items."""
    from piro_cli.retrieval.metrics import rank

    rng = np.random.default_rng(5)
    dim = 96
    if kind == "integers":
        items = rng.integers(-2, 3, size=(3000, dim)).astype(np.float32)
        queries = rng.integers(-2, 3, size=(150, dim)).astype(np.float32)
    else:
        centres = rng.standard_normal((20, dim)).astype(np.float32)
        items = centres[rng.integers(0, 20, 3000)] + 0.05 * rng.standard_normal((3000, dim)).astype(np.float32)
        if kind == "duplicates":
            items[1500:1800] = items[1200:1500]  # exact duplicates: ties broken by the lower index
        queries = items[rng.integers(0, 3000, 150)] + 0.01 * rng.standard_normal((150, dim)).astype(np.float32)
        items /= np.linalg.norm(items, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    q, x = torch.from_numpy(queries), torch.from_numpy(items)
    x64, q64 = items.astype(np.float64), queries.astype(np.float64)
    keys = (x64 * x64).sum(1)[None, :] - 2.0 * q64 @ x64.T
    exact = np.stack([np.lexsort((np.arange(len(row)), row))[:10] for row in keys])
    fast = rank(q, x, k=10, precision="bf16", chunk_rows=40).neighbours.numpy()
    assert np.array_equal(fast, exact)
    float32 = rank(q, x, k=10, precision="fp32").neighbours.numpy()
    differ = np.flatnonzero((float32 != exact).any(1))
    for row in differ:  # only swaps within float32 rounding of the keys
        assert np.abs(np.sort(keys[row, float32[row]]) - keys[row, exact[row]]).max() < 1e-6 * (1 + np.abs(keys[row]).max())


def test_the_bf16_key_bound_holds():
    """|approximate key - float32 key| stays under bf16_key_slack's bound, with room to spare, on wide vectors."""
    from piro_cli.retrieval.metrics import bf16_key_slack

    rng = np.random.default_rng(1)
    for dim, scale in ((64, 1.0), (2048, 1.0), (2048, 30.0)):
        q = (scale * rng.standard_normal((64, dim))).astype(np.float32)
        x = (scale * rng.standard_normal((2000, dim))).astype(np.float32)
        xx = np.einsum("ij,ij->i", x, x, dtype=np.float32)
        exact = xx[None, :] - 2.0 * (q.astype(np.float64) @ x.T.astype(np.float64))
        approx = xx[None, :] - 2.0 * (torch.from_numpy(q).bfloat16() @ torch.from_numpy(x).bfloat16().T).float().numpy()
        a, b = bf16_key_slack(dim)
        bound = a * np.multiply.outer(np.linalg.norm(q, axis=1), np.linalg.norm(x, axis=1)) + b * xx[None, :]
        assert np.all(np.abs(approx - exact) <= bound)


def test_bf16_is_chosen_only_where_measured_faster(monkeypatch):
    import piro_cli.retrieval.metrics as metrics

    calls = []
    real = metrics._rank_bf16
    monkeypatch.setattr(metrics, "_rank_bf16", lambda *args: (calls.append(1), real(*args)))
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.standard_normal((8, 64)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((metrics.BF16_MIN_ITEMS, 64)).astype(np.float32))
    for speedup, used in ((0.0, False), (1.5, False), (3.0, True)):
        monkeypatch.setattr(metrics, "bf16_matmul_speedup", lambda speedup=speedup: speedup)
        calls.clear()
        metrics.rank(q, x, k=5)
        assert bool(calls) == used, speedup
        metrics.rank(q, x, k=5, query_ids=torch.zeros(8), item_ids=torch.zeros(len(x)))  # AP: never bf16
        assert len(calls) == (1 if used else 0)
