"""`piro evaluate --task open-set` and the index's scoring rules, checked against brute-force loops over embeddings
taken straight from the model's forward pass on the stored pixels (not from the index, calibration or evaluation
code)."""

from __future__ import annotations

import json
from itertools import chain

import numpy as np
import pytest
import torch
from conftest import tiny_config
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.store import ViewSetStore, normalize_views
from piro_cli.inference.index import EnrolledEmbeddings, GalleryIndex, Queries, ScoringRule, build_index
from piro_cli.inference.run import load_run
from piro_cli.training import train

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    """conftest's tiny data file (3 categories x 5 objects, 12 views) and one tiny run with a third of its train
    objects held out for validation."""
    runs = tmp_path_factory.mktemp("openset") / "runs"
    return {"data": tiny_data, "run": train(tiny_config(tiny_data, project=str(runs), name="run", epochs=1, val_fraction=0.34)).run_dir}


def forward(model, views: np.ndarray):
    """(sv_obj (V, D), mv_obj (D,)) of one view set of uint8 views, by the model's own forward pass."""
    with torch.no_grad():
        out = model(normalize_views(views[None]))
    return out.sv_obj[0].numpy().astype(np.float64), out.mv_obj[0].numpy().astype(np.float64)


def brute_open_set(world, enrol: int, counts: tuple[int, ...], draws: int, seed: int):
    """The protocol by loops: combined distance (mean of the per-photo nearest-view distance and the view-set
    distance), rejection by the nearest object's distance. Returns {Q: (scores, enrolled, correct)}."""
    run = load_run(world["run"], "cpu")
    store = ViewSetStore(world["data"])
    train_split = store.split("train")
    val = set(run.checkpoint["data"]["val"]["names"])
    gallery, held = [], []
    for i, name in enumerate(train_split.object_names):
        views = train_split.views_uint8(i)
        if name in val:
            held.append(views)
        else:
            sv, mv = forward(run.model, views)
            gallery.append((sv, mv))
    n, v = len(held), held[0].shape[0]
    out = {q: ([], [], []) for q in counts}
    for draw in range(draws):
        chosen = list(np.random.default_rng(seed + draw).permutation(n)[: (n + 1) // 2])
        objects = gallery + [forward(run.model, held[o][:enrol]) for o in chosen]
        for q in counts:
            rng = np.random.default_rng((seed, draw, q))
            for o in range(n):
                order = rng.permutation(np.arange(enrol, v))
                for g in range((v - enrol) // q):
                    sv, mv = forward(run.model, held[o][order[g * q : (g + 1) * q]])
                    distance = [
                        (np.mean([min(np.linalg.norm(p - x) for x in osv) for p in sv]) + np.linalg.norm(mv - omv)) / 2
                        for osv, omv in objects
                    ]
                    best = int(np.argmin(distance))
                    known = o in chosen
                    out[q][0].append(distance[best])
                    out[q][1].append(known)
                    out[q][2].append(known and best == len(gallery) + chosen.index(o))
    return {q: tuple(np.array(x) for x in parts) for q, parts in out.items()}


def brute_rates(scores, enrolled, correct) -> dict[str, float]:
    """rank-1, EER and DIR@FAR by trying every observed score (and none) as the threshold."""
    genuine, impostor = scores[enrolled], scores[~enrolled]
    thresholds = [-np.inf, *sorted(scores)]
    far = [np.mean(impostor <= t) for t in thresholds]
    frr = [np.mean(genuine > t) for t in thresholds]

    def dir_at(x):
        t = max(t for t, f in zip(thresholds, far, strict=True) if f <= x)
        return np.mean(correct[enrolled] & (genuine <= t))

    return {
        "rank1": 100 * np.mean(correct[enrolled]),
        "eer": 100 * min(max(a, b) for a, b in zip(far, frr, strict=True)),
        "dir@far1": 100 * dir_at(0.01),
        "dir@far5": 100 * dir_at(0.05),
    }


def test_open_set_matches_a_brute_force_recomputation(world):
    result = runner.invoke(
        app,
        ["evaluate", str(world["run"]), "--data", str(world["data"]), "--split", "val", "--task", "open-set",
         "--query-views", "1,2", "--draws", "3", "--seed", "4", "--rejection", "distance", "--format", "json"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)["open-set"]
    assert sorted(measured) == ["1", "2"]
    expected = brute_open_set(world, enrol=4, counts=(1, 2), draws=3, seed=4)
    for q in ("1", "2"):
        scores, enrolled, correct = expected[int(q)]
        truth = brute_rates(scores, enrolled, correct)
        for rate, value in truth.items():
            assert measured[q][rate] == pytest.approx(value, abs=1e-6), (q, rate)
        assert measured[q]["queries"] == {"enrolled": int(enrolled.sum()), "never_enrolled": int((~enrolled).sum())}
        assert measured[q]["settings"]["enrol_views"] == 4 and measured[q]["settings"]["query_views"] == int(q)
        assert measured[q]["settings"]["scoring"] == {"distance": "combined", "rejection": "distance"}  # as asked
    assert not list(world["run"].glob("eval_*")), "open-set writes nothing unless --out is given"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--enrol-views", "11", "--query-views", "2"], "--enrol-views 11 + --query-views 2: more than the 12 views"),
        (["--query-views", "1,x"], "--query-views '1,x'"),
        (["--query-views", "0"], "--query-views '0'"),
        (["--rejection", "vibes"], "rejection rule 'vibes'"),
    ],
)
def test_open_set_bad_input_is_one_line(world, argv, message):
    result = runner.invoke(
        app, ["evaluate", str(world["run"]), "--data", str(world["data"]), "--split", "val", "--task", "open-set", *argv],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2


def test_each_rejection_rule_by_hand(world, tmp_path):
    """The five scores of one query against an index of trained and enrolled objects, recomputed from its stored
    vectors by loops."""
    build_index(world["run"], tmp_path / "g.piro-index", data=world["data"])
    rng = np.random.default_rng(0)

    def unit(n):
        x = rng.normal(size=(n, 16)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    built = GalleryIndex(tmp_path / "g.piro-index")
    categories = built.categories
    enrolled = [  # objects of 2, 3 and 4 photos: the group "not trained on", own spreads from 3 views on
        EnrolledEmbeddings(f"new{k}", categories[k % len(categories)], "add: photos", unit(e), unit(e), unit(1)[0], unit(1)[0])
        for k, e in enumerate((2, 3, 4, 3))
    ]
    gallery = built.with_enrolled(enrolled)
    vec = gallery.vectors()
    query = unit(2)
    mv = query.mean(axis=0) / np.linalg.norm(query.mean(axis=0))
    objects = range(len(gallery.objects))
    rows = [[r for r in range(len(vec.view_object)) if vec.view_object[r] == o] for o in objects]
    views = [np.mean([min(np.linalg.norm(p - vec.sv_obj[r]) for r in rows[o]) for p in query]) for o in objects]
    sets = [np.linalg.norm(mv - vec.mv_obj[o]) for o in objects]
    raw = []  # root-mean-square distance to the centroid, n - 1 in the mean
    for o in objects:
        centre = np.mean(vec.sv_obj[rows[o]], axis=0)
        raw.append(np.sqrt(sum(np.sum((vec.sv_obj[r] - centre) ** 2) for r in rows[o]) / max(len(rows[o]) - 1, 1)))
    trained = [o < len(built.objects) for o in objects]
    assert trained.count(False) == len(enrolled) and gallery.objects[-1].source == "add: photos"
    scale = [float(np.median([raw[p] for p in objects if trained[p] == trained[o] and len(rows[p]) >= 2])) for o in objects]
    spreads = [raw[o] if len(rows[o]) >= 3 else scale[o] for o in objects]
    for distance, values in (("views", views), ("viewset", sets), ("combined", [(a + b) / 2 for a, b in zip(views, sets, strict=True)])):
        ordered = sorted(objects, key=lambda o: values[o])
        best, second = ordered[0], ordered[1]
        others = sorted(np.linalg.norm(vec.mv_obj[best] - vec.mv_obj[o]) for o in objects if o != best)
        first = min(objects, key=lambda o: values[o] / scale[o])  # ranked at each group's scale
        expected = {
            "distance": (best, values[best]),
            "ratio": (best, values[best] / values[second]),
            "spread": (best, values[best] / spreads[best]),  # the nearest object at its own scale
            "neighbourhood": (best, values[best] / others[4]),
            "scaled": (first, values[first] / ((spreads[first] + scale[first]) / 2)),
        }
        for rejection, (answer, value) in expected.items():
            scores = gallery.score(Queries(query[None], query[None], mv[None]), ScoringRule(distance, rejection))
            assert int(scores.nearest[0]) == answer, (distance, rejection)
            assert scores.score[0] == pytest.approx(value, rel=1e-4), (distance, rejection)


def test_identify_reports_category_and_confidence_even_when_unknown(world, tmp_path):
    index = tmp_path / "g.piro-index"
    build_index(world["run"], index, data=world["data"])
    result = runner.invoke(app, ["index", "calibrate", str(index), "--data", str(world["data"]), "--draws", "2"])
    assert result.exit_code == 0, result.output
    assert "1 photo:" in result.output and "3 photos:" in result.output  # 12 views: 4 enrol, queries of 1, 2 and 3
    gallery = GalleryIndex(index)
    assert set(gallery.calibration["by_photos"]) == {"1", "2", "3"} and gallery.rule == ScoringRule()
    store = ViewSetStore(world["data"])
    split = store.split("train")
    photo = tmp_path / "q.png"
    from PIL import Image

    Image.fromarray(split.views_uint8(0)[5]).save(photo)
    answer = json.loads(runner.invoke(app, ["identify", str(index), str(photo), "--format", "json"]).stdout)
    impostors = gallery.calibrated(1)["impostor_scores"]
    assert answer["false_accept_rate"] == pytest.approx(np.mean(np.array(impostors) <= answer["score"]), abs=1e-4)
    assert answer["category"] in gallery.categories and 0 < answer["category_share"] <= 1
    strict = json.loads(runner.invoke(app, ["identify", str(index), str(photo), "--format", "json", "--threshold", "0"]).stdout)
    assert strict["answer"] == "unknown" and strict["category"] == answer["category"]
    assert strict["nearest_object"] == answer["nearest_object"]
    assert list(chain(answer["scoring"].values())) == ["combined", "scaled"]  # the default rule
