"""Serving: `piro index build/add/remove/info/calibrate`, `piro identify` and `piro export --onnx`, on a tiny synthetic set
with tiny trained runs. Expected answers come from brute-force loops over the stored vectors and from the
model's own forward pass, not from the index code."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import piro_cli.inference.index as index_module
from piro_cli.cli import app
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.data.store import ViewSetStore, normalize_views
from piro_cli.errors import PiroError
from piro_cli.inference.calibration import OpenSetProtocol, calibrate_index, choose_threshold, rates
from piro_cli.inference.index import GalleryIndex, ScoringRule, add_objects, build_index, enrolments_from_folder, identify
from piro_cli.inference.run import load_run
from piro_cli.training import TrainConfig, train

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny data file (4 categories x 6 objects, 2 of each in test), two runs of different seeds, test photos as files."""
    root = tmp_path_factory.mktemp("serving")
    data = root / "synthetic.h5"
    options = {"seed": 0, "categories": 4, "objects_per_category": 6, "test_fraction": 0.2}
    prepare_dataset("synthetic", None, data, PrepareOptions(size=32), options)
    runs = []
    for seed in (0, 1):
        config = TrainConfig(
            data=str(data), project=str(root / "runs"), name=f"seed{seed}", backbone="tiny", pretrained=False, cat_dim=16,
            obj_dim=16, epochs=2, batch_pairs=4, pairs_per_object=2, lr=1e-3, seed=seed, device="cpu", early_stop_rho=0.0,
            val_fraction=0.25,
        )  # fmt: skip
        runs.append(train(config).run_dir)
    store = ViewSetStore(data)
    test = store.split("test")
    photos = root / "photos"
    for i, name in enumerate(test.object_names):
        folder = photos / store.categories[test.category[i]] / name
        folder.mkdir(parents=True)
        for k, view in enumerate(test.views_uint8(i)):
            Image.fromarray(view).save(folder / f"{k}.png")
    return {"root": root, "data": data, "runs": runs, "photos": photos, "test_names": list(test.object_names)}


def invoke(argv: list[str]):
    result = runner.invoke(app, [str(a) for a in argv], env=WIDE)
    assert "Traceback" not in result.output, result.output
    return result


def brute_answer(
    gallery: GalleryIndex, sv_cat: np.ndarray, sv_obj: np.ndarray, mv_obj: np.ndarray | None = None
) -> tuple[str, list[tuple[str, float]], float]:
    """The identify rule by loops: each photo's 10 nearest views (ties to the lower row) vote, pooled; an object's
    distance is the mean over photos of the distance to its nearest view; with `mv_obj`, the default rule: the mean
    of that and the distance between the photos' and the object's view-set embeddings ("combined"), objects ranked
    by distance over their group's scale (the median spread of the objects built from the run's training split, or
    of the others; an object's spread: the root-mean-square distance of its views to their centre, n - 1 in the
    mean), the first one's score its distance over the mean of that scale and its own spread (the scale below 3
    views). Returns (category, objects ranked first first with their distances, the first one's score)."""
    v = gallery.vectors()
    votes = np.zeros(len(gallery.categories), dtype=int)
    for q in sv_cat:
        d = [float(np.sum((q - x) ** 2)) for x in v.sv_cat]
        for row in sorted(range(len(d)), key=lambda r: (d[r], r))[:10]:
            votes[gallery.objects[v.view_object[row]].category] += 1
    category = gallery.categories[int(np.argmax(votes))]
    distances = []
    for position, obj in enumerate(gallery.objects):
        rows = [r for r in range(len(v.view_object)) if v.view_object[r] == position]
        per_photo = float(np.mean([min(float(np.linalg.norm(q - v.sv_obj[r])) for r in rows) for q in sv_obj]))
        if mv_obj is not None:
            per_photo = (per_photo + float(np.linalg.norm(mv_obj - v.mv_obj[position]))) / 2
        centre = np.mean([v.sv_obj[r] for r in rows], axis=0)
        spread = math.sqrt(sum(float(np.sum((v.sv_obj[r] - centre) ** 2)) for r in rows) / max(len(rows) - 1, 1))
        trained = obj.source.startswith("build: ") and obj.source.endswith(" train")
        distances.append((obj.name, per_photo, spread, len(rows), trained))
    if mv_obj is None:  # the `views` + `distance` rule: by distance, the distance is the score
        ranked = sorted(((name, d) for name, d, *_ in distances), key=lambda item: item[1])
        return category, ranked, ranked[0][1]
    scales = {
        group: float(np.median([s for _, _, s, n, t in distances if t == group and n >= 2])) for group in {d[4] for d in distances}
    }
    ranked = sorted(distances, key=lambda item: item[1] / scales[item[4]])
    name, d, spread, n, group = ranked[0]
    own = spread if n >= 3 else scales[group]
    return category, [(name, d) for name, d, *_ in ranked], d / ((own + scales[group]) / 2)


def model_embeddings(run_dir: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-view embeddings and the view-set object embedding of photo files, straight from the PAN forward pass."""
    run = load_run(run_dir, "cpu")
    views = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((run.image_size, run.image_size), Image.BILINEAR)) for p in paths]
    )
    with torch.no_grad():
        out = run.model(normalize_views(views[None]))
    return out.sv_cat[0].numpy(), out.sv_obj[0].numpy(), out.mv_obj[0].numpy()


# ----------------------------------------------------------------------------- a new user's path


def test_build_add_identify_as_typed(world, tmp_path):
    run, data = world["runs"][0], world["data"]
    result = invoke(["index", "build", run, "--data", data, "--out", "shop.piro-index"])
    assert result.exit_code == 0, result.output
    gallery = GalleryIndex("shop.piro-index")
    trained = load_run(run, "cpu").checkpoint["data"]
    assert len(gallery.objects) == len(trained["train_indices"])  # the run's validation objects stay out
    assert not {o.name for o in gallery.objects} & set(trained["val"]["names"])
    result = invoke(["index", "calibrate", "shop.piro-index", "--data", data, "--plot", "cal.png"])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output and Path("cal.png").stat().st_size > 1000
    threshold = GalleryIndex("shop.piro-index").threshold
    assert threshold is not None and threshold > 0
    recorded = GalleryIndex("shop.piro-index").calibration["by_photos"]["1"]
    assert recorded["far"] > 0  # the equal-error point of this tiny model accepts some unknown photos
    first = recorded["lookalikes"][0]  # where the false accepts come from, in the index and on screen
    assert f"unknown '{first['object']}' taken for '{first['taken_for']}'" in " ".join(result.output.split())

    # enrol each test object from its first 4 photos (a folder tree), keep photos 4 and 5 as queries
    enrol = tmp_path / "enrol"
    for obj in world["photos"].glob("*/*"):
        target = enrol / obj.parent.name / obj.name
        target.mkdir(parents=True)
        for k in range(4):
            (target / f"{k}.png").write_bytes((obj / f"{k}.png").read_bytes())
    result = invoke(["index", "add", "shop.piro-index", enrol])
    assert result.exit_code == 0, result.output
    gallery = GalleryIndex("shop.piro-index")
    assert {o.name for o in gallery.objects} >= set(world["test_names"])
    assert gallery.threshold == threshold  # adding keeps the calibration

    name = world["test_names"][0]
    query = next(world["photos"].glob(f"*/{name}")) / "0.png"  # an enrolled photo: at distance 0
    result = invoke(["identify", "shop.piro-index", query, "--format", "json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    _, _, alone = model_embeddings(run, [query])
    own = model_embeddings(run, [query.with_name(f"{k}.png") for k in range(4)])[2]  # the view set `add` enrolled
    assert answer["nearest_object"] == name  # its own view at distance 0, plus half the view-set distance
    assert answer["distance"] == pytest.approx(float(np.linalg.norm(alone - own)) / 2, abs=2e-4)

    held_out = [next(world["photos"].glob(f"*/{name}")) / f"{k}.png" for k in (4, 5)]
    result = invoke(["identify", "shop.piro-index", *held_out, "--format", "json", "--top", "40"])
    answer = json.loads(result.output)
    sv_cat, sv_obj, mv_obj = model_embeddings(run, held_out)
    category, ranking, score = brute_answer(gallery, sv_cat, sv_obj, mv_obj)
    assert answer["category"] == category
    assert [r["object"] for r in answer["nearest"]] == [n for n, _ in ranking]
    assert np.allclose([r["distance"] for r in answer["nearest"]], [d for _, d in ranking], atol=2e-4)
    assert answer["score"] == pytest.approx(score, abs=2e-4)
    threshold_of_two = GalleryIndex("shop.piro-index").calibrated(2)["score"]  # the threshold calibrated for 2 photos
    expected = ranking[0][0] if score <= threshold_of_two else "unknown"
    assert answer["answer"] == expected and answer["photos"] == 2 and answer["threshold"] == threshold_of_two
    table = invoke(["identify", "shop.piro-index", *held_out])
    assert table.exit_code == 0 and "category" in table.output and "model" in table.output

    info = invoke(["index", "info", "shop.piro-index", "--format", "json"])
    facts = json.loads(info.output)
    assert facts["objects"] == len(gallery.objects) and facts["enrolled"] == len(world["test_names"])

    result = invoke(["index", "remove", "shop.piro-index", name])
    assert result.exit_code == 0, result.output
    after = json.loads(invoke(["identify", "shop.piro-index", query, "--format", "json", "--top", "40"]).output)
    assert name not in [r["object"] for r in after["nearest"]]
    assert sorted(p.name for p in Path("shop.piro-index/shards").iterdir()) == sorted(
        GalleryIndex("shop.piro-index").manifest["shards"]
    )


def test_identify_threshold_option_decides_unknown(world):
    build_index(world["runs"][0], "g.piro-index", data=world["data"])
    photo = sorted(world["photos"].glob("*/*/*.png"))[0]
    nearest = identify("g.piro-index", [photo]).answer["score"]  # the threshold applies to the rule's score
    assert identify("g.piro-index", [photo], threshold=nearest + 1e-3).answer["answer"] != "unknown"
    assert identify("g.piro-index", [photo], threshold=max(0.0, nearest - 1e-3)).answer["answer"] == "unknown"
    assert identify("g.piro-index", [photo]).answer["threshold"] is None  # not calibrated: never unknown


# ----------------------------------------------------------------------------- calibration by hand


def test_choose_threshold_equal_error_by_hand():
    genuine = np.array([0.1, 0.2, 0.3, 0.6])
    impostor = np.array([0.25, 0.5, 0.7, 0.8])
    t = choose_threshold(genuine, impostor)
    # at t in (0.3, 0.5): FAR 1/4 (0.25 accepted), FRR 1/4 (0.6 rejected); no threshold does better on both
    assert 0.3 < t < 0.5 and rates(genuine, impostor, t) == (0.25, 0.25)
    t = choose_threshold(genuine, impostor, target_far=0.0)
    assert 0.2 < t < 0.25 and rates(genuine, impostor, t) == (0.0, 0.5)  # 0.3 and 0.6 rejected


def test_calibrate_counts_match_a_brute_force_draw(world):
    """One draw of the calibration protocol by loops: genuine and impostor distances (the `views` distance)."""
    build_index(world["runs"][0], "g.piro-index", data=world["data"])
    result = calibrate_index(
        "g.piro-index", data=world["data"], split="test", save=False,
        protocol=OpenSetProtocol(enrol_views=3, query_views=(1,), draws=1, seed=3, rule=ScoringRule("views", "distance")),
    )  # fmt: skip
    gallery = GalleryIndex("g.piro-index")
    run = load_run(world["runs"][0], "cpu")
    store = ViewSetStore(world["data"])
    test = store.split("test")
    with torch.no_grad():
        sv = run.model(normalize_views(np.stack([test.views_uint8(i) for i in range(len(test))]))).sv_obj.numpy()
    n, v = sv.shape[:2]
    enrolled = set(np.random.default_rng(3).permutation(n)[: (n + 1) // 2].tolist())
    vectors = gallery.vectors()
    index_views, index_owner = vectors.sv_obj, [gallery.objects[i].name for i in vectors.view_object]
    genuine, impostor, taken_for = [], [], []
    for o in range(n):
        for q in sv[o, 3:]:
            candidates = [(float(np.linalg.norm(q - x)), owner) for x, owner in zip(index_views, index_owner, strict=True)]
            candidates += [(float(np.linalg.norm(q - x)), test.object_names[e]) for e in sorted(enrolled) for x in sv[e, :3]]
            d, nearest = min(candidates, key=lambda c: c[0])
            (genuine if o in enrolled else impostor).append(d)
            if o not in enrolled:
                taken_for.append((d, test.object_names[o], nearest))
    # float32 ||q||^2 + ||x||^2 - 2 q.x loses ~1e-7 of d^2 to cancellation: ~4e-5 of d at the smallest distances here
    assert np.allclose(np.sort(result.single.genuine), np.sort(genuine), atol=1e-4)
    assert np.allclose(np.sort(result.single.impostor), np.sort(impostor), atol=1e-4)
    # the never-enrolled objects accepted at the threshold, and what each was taken for, counted by hand
    accepted = Counter((asked, nearest) for d, asked, nearest in taken_for if d <= result.single.score)
    asked_total = Counter(asked for _, asked, _ in taken_for)
    expected = sorted(accepted.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert result.single.lookalikes == [
        {"object": a, "taken_for": b, "accepted": k, "queries": asked_total[a]} for (a, b), k in expected
    ]
    assert result.single.far > 0 and result.single.lookalikes  # the equal-error point accepts some: the check has cases
    assert GalleryIndex("g.piro-index").threshold is None  # --no-save


# ----------------------------------------------------------------------------- safety


def test_an_index_refuses_another_checkpoint(world):
    build_index(world["runs"][0], "g.piro-index", data=world["data"])
    photo = sorted(world["photos"].glob("*/*/*.png"))[0]
    result = invoke(["identify", "g.piro-index", photo, "--run", world["runs"][1]])
    assert result.exit_code == 1 and "not the checkpoint" in result.output and "fingerprint" in result.output
    result = invoke(["index", "add", "g.piro-index", "--object", "x", "--category", "mug", photo, "--run", world["runs"][1]])
    assert result.exit_code == 1 and "not the checkpoint" in result.output
    assert "x" not in {o.name for o in GalleryIndex("g.piro-index").objects}


def test_a_failed_add_leaves_the_index_as_it_was(world, monkeypatch):
    build_index(world["runs"][0], "g.piro-index", data=world["data"])
    before = Path("g.piro-index/index.json").read_text()
    photos = sorted(world["photos"].glob("*/*/*.png"))[:3]

    def disk_full(*args, **kwargs):
        raise PiroError("disk full writing g.piro-index/index.json")

    with monkeypatch.context() as patch, pytest.raises(PiroError, match="disk full"):
        patch.setattr(index_module, "write_json", disk_full)
        add_objects("g.piro-index", [index_module.Enrolment("new", "mug", photos)])
    assert Path("g.piro-index/index.json").read_text() == before  # the shard was written, the manifest not
    assert len(GalleryIndex("g.piro-index").objects) == len(json.loads(before)["objects"])
    add_objects("g.piro-index", [index_module.Enrolment("new", "mug", photos)])  # the next write cleans up
    shards = sorted(p.name for p in Path("g.piro-index/shards").iterdir())
    assert shards == sorted(GalleryIndex("g.piro-index").manifest["shards"])
    # one bad photo in a batch of objects: nothing is added
    bad = Path("bad.jpg")
    bad.write_bytes(b"not an image")
    count = len(GalleryIndex("g.piro-index").objects)
    with pytest.raises(PiroError, match="bad.jpg"):
        add_objects("g.piro-index", [index_module.Enrolment("a", "mug", photos), index_module.Enrolment("b", "cup", [bad])])
    assert len(GalleryIndex("g.piro-index").objects) == count


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["identify", "nope.piro-index", "x.png"], "no such index"),
        (["identify", "{index}", "missing.png"], "missing.png: no such image file"),
        (["identify", "{index}", "{photo}", "--format", "xml"], "--format 'xml'"),
        (["identify", "{index}", "{photo}", "--threshold", "-1"], "--threshold -1"),
        (["index", "add", "{index}", "--object", "a", "{photo}"], "--object and --category go together"),
        (["index", "add", "{index}", "{photo}"], "need --object NAME --category CAT"),
        (["index", "add", "{index}", "--object", "{existing}", "--category", "mug", "{photo}"], "already in"),
        (["index", "remove", "{index}", "no-such-object"], "no such object"),
        (["index", "build", "{run}", "--out", "x.h5"], "NAME.piro-index"),
        (["index", "build", "{run}", "--out", "{index}"], "already exists"),
        (["index", "calibrate", "{index}", "--split", "bogus"], "--split 'bogus'"),
        (["index", "calibrate", "{index}", "--far", "2"], "--far 2"),
        (["index", "calibrate", "{index}", "--plot", "curve.pdf"], "--plot curve.pdf: use a .png"),
        (["export", "{run}"], "--onnx NAME.onnx"),
        (["export", "{run}", "--onnx", "model.pt"], "NAME.onnx"),
    ],
)
def test_bad_inputs_get_one_line(world, argv, message):
    if not Path("g.piro-index").exists():
        build_index(world["runs"][0], "g.piro-index", data=world["data"])
    photo = sorted(world["photos"].glob("*/*/*.png"))[0]
    values = {
        "index": "g.piro-index",
        "photo": photo,
        "run": world["runs"][0],
        "existing": GalleryIndex("g.piro-index").objects[0].name,
    }
    result = invoke([a.format(**values) if isinstance(a, str) else a for a in argv])
    assert result.exit_code != 0 and message in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 2


def test_enrolment_folder_layout(tmp_path):
    (tmp_path / "mug" / "red").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "mug" / "red" / "a.jpg")
    (tmp_path / "mug" / "empty").mkdir()
    found = enrolments_from_folder(tmp_path)
    assert [(e.name, e.category, [p.name for p in e.photos]) for e in found] == [("red", "mug", ["a.jpg"])]
    with pytest.raises(PiroError, match="no photos found"):
        enrolments_from_folder(tmp_path / "mug" / "empty")


# ----------------------------------------------------------------------------- ONNX


def test_onnx_export_matches_the_model(world):
    ort = pytest.importorskip("onnxruntime")
    run = world["runs"][0]
    result = invoke(["export", run, "--onnx", "model.onnx"])
    assert result.exit_code == 0, result.output
    meta = json.loads(Path("model.json").read_text())
    size = meta["image_size"]
    photos = sorted(world["photos"].glob("*/*/*.png"))[:5]
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in photos])
    embedder = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    sv_cat, sv_obj, feats = embedder.run(None, {"images": images})
    expected_cat, expected_obj, _ = model_embeddings(run, photos)
    assert np.abs(sv_cat - expected_cat).max() < 1e-4 and np.abs(sv_obj - expected_obj).max() < 1e-4
    head = ort.InferenceSession("model.viewset.onnx", providers=["CPUExecutionProvider"])
    model = load_run(run, "cpu").model
    for views in (1, 3, 5):  # V is dynamic
        mv_cat, mv_obj = head.run(None, {"view_features": feats[None, :views]})
        with torch.no_grad():
            out = model(normalize_views(images[None, :views]))
        assert np.abs(mv_cat[0] - out.mv_cat[0].numpy()).max() < 1e-4 and np.abs(mv_obj[0] - out.mv_obj[0].numpy()).max() < 1e-4
    assert meta["fingerprint"] == load_run(run, "cpu").fingerprint()
    again = invoke(["export", run, "--onnx", "model.onnx"])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_identify_with_the_exported_graphs_answers_as_the_model_without_torch(world):
    pytest.importorskip("onnxruntime")
    run = world["runs"][0]
    build_index(run, "o.piro-index", data=world["data"])
    calibrate_index("o.piro-index", data=world["data"], protocol=OpenSetProtocol(draws=2))
    assert invoke(["export", run, "--onnx", "o.onnx"]).exit_code == 0
    photos = sorted(world["photos"].glob("*/*/*.png"))
    for chosen in ([photos[0]], photos[3:6], [photos[-1], photos[-2]]):
        by_model = identify("o.piro-index", chosen).answer
        by_graphs = identify("o.piro-index", chosen, onnx="o.onnx").answer
        for key in ("answer", "nearest_object", "category", "category_votes"):
            assert by_graphs[key] == by_model[key]
        assert by_graphs["score"] == pytest.approx(by_model["score"], abs=1e-4)
    # graphs exported into the index folder are what identify uses by default
    import shutil

    for suffix in (".onnx", ".viewset.onnx", ".json"):
        shutil.copy(f"o{suffix}", f"o.piro-index/model{suffix}")
    bundled = identify("o.piro-index", [photos[0]])
    assert bundled.engine == "onnx" and bundled.answer["answer"] == identify("o.piro-index", [photos[0]], run=run).answer["answer"]
    assert identify("o.piro-index", [photos[0]], run=run).engine == "torch"
    # graphs of other weights left in the folder (the index rebuilt from another run): the run's model answers
    stale = json.loads(Path("o.piro-index/model.json").read_text())
    Path("o.piro-index/model.json").write_text(json.dumps({**stale, "fingerprint": "0" * 16}))
    assert identify("o.piro-index", [photos[0]]).engine == "torch"
    Path("o.piro-index/model.json").write_text(json.dumps(stale))
    # a fresh process answers without importing torch, timm or torchvision
    code = (
        "import sys; from piro_cli.cli import app\n"
        f"try: app(['identify', 'o.piro-index', {str(photos[0])!r}, '--format', 'json'])\n"
        "except SystemExit as exit: assert not exit.code, exit.code\n"
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("[]"), out.stdout + out.stderr
    # graphs of another run, or a missing graph: one line each
    assert invoke(["export", world["runs"][1], "--onnx", "other.onnx"]).exit_code == 0
    result = invoke(["identify", "o.piro-index", photos[0], "--onnx", "other.onnx"])
    assert result.exit_code == 1 and "exported from other weights" in result.output
    Path("other.viewset.onnx").unlink()
    result = invoke(["identify", "o.piro-index", photos[0], "--onnx", "other.onnx"])
    assert result.exit_code == 1 and "other.viewset.onnx is missing" in result.output
    result = invoke(["identify", "o.piro-index", photos[0], "--onnx", "o.onnx", "--device", "cpu"])
    assert result.exit_code == 1 and "leave out --run and --device" in result.output


def test_identify_each_answers_every_photo_as_its_own_query(world):
    build_index(world["runs"][0], "g.piro-index", data=world["data"])
    gallery = GalleryIndex("g.piro-index")
    photos = sorted(world["photos"].glob("*/*/*.png"))[:7]
    sv_cat, sv_obj, _ = model_embeddings(world["runs"][0], photos)
    mv_obj = np.stack([model_embeddings(world["runs"][0], [p])[2] for p in photos])  # each photo a view set of one
    batch = gallery.identify_each(sv_cat, sv_obj, mv_obj, top=3, threshold=0.05, chunk=3)  # chunks of 3: 3 + 3 + 1
    for k in range(len(photos)):
        alone = gallery.identify(sv_cat[k : k + 1], sv_obj[k : k + 1], mv_obj[k], top=3, threshold=0.05)
        category, ranking, _ = brute_answer(gallery, sv_cat[k : k + 1], sv_obj[k : k + 1], mv_obj[k])
        assert batch[k]["category"] == alone["category"] == category
        assert [r["object"] for r in batch[k]["nearest"]] == [r["object"] for r in alone["nearest"]] == [n for n, _ in ranking[:3]]
        assert batch[k]["answer"] == alone["answer"]


def test_the_readme_deploy_snippet_answers_like_identify(world, capsys):
    """The README's onnxruntime + numpy lines, run as printed, give `piro identify`'s answer for one photo."""
    pytest.importorskip("onnxruntime")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = readme.split("**Without piro.**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) <= 22
    build_index(world["runs"][0], "shop.piro-index", data=world["data"])
    calibrate_index("shop.piro-index", data=world["data"])
    invoke(["export", world["runs"][0], "--onnx", "exp.onnx"])
    for photo in sorted(world["photos"].glob("*/*/*.png"))[:4]:
        Path("photo.jpg").write_bytes(photo.read_bytes())  # a PNG under a .jpg name: PIL reads it by content
        capsys.readouterr()
        exec(compile(snippet, "README.md", "exec"), {})
        printed = capsys.readouterr().out.split()
        expected = identify("shop.piro-index", [photo]).answer
        assert printed[0] == expected["answer"]
        assert abs(float(printed[1]) - expected["score"]) < 1e-3


def test_a_failed_export_check_writes_nothing(world, monkeypatch):
    pytest.importorskip("onnxruntime")
    import piro_cli.inference.export as export_module

    Path("model.onnx").write_bytes(b"the previous export")
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # every difference, even 0, fails the check
    result = invoke(["export", world["runs"][0], "--onnx", "model.onnx", "--overwrite"])
    assert result.exit_code == 1 and "nothing written" in result.output
    assert Path("model.onnx").read_bytes() == b"the previous export"
    assert sorted(p.name for p in Path(".").iterdir()) == ["model.onnx"]


def test_index_names_and_a_failed_build(world, monkeypatch):
    build_index(world["runs"][0], "g.piro-index", data=world["data"])
    photos = sorted(world["photos"].glob("*/*/*.png"))[:2]
    with pytest.raises(PiroError, match="'unknown'"):
        add_objects("g.piro-index", [index_module.Enrolment("unknown", "mug", photos)])
    name = GalleryIndex("g.piro-index").objects[0].name
    change = index_module.remove_objects("g.piro-index", [name, name])  # named twice: removed once
    assert change.objects == 1 and change.total_objects == len(GalleryIndex("g.piro-index").objects)

    def fails(*args, **kwargs):
        raise RuntimeError("the machine stopped")

    import piro_cli.inference.cache as cache_module

    monkeypatch.setattr(cache_module, "cached_embeddings", fails)
    with pytest.raises(RuntimeError):
        build_index(world["runs"][0], "new.piro-index", data=world["data"])
    assert not Path("new.piro-index").exists()  # a retry is not refused by a half-made folder


def test_names_with_control_characters_are_refused(world):
    build_index(world["runs"][0], "g.piro-index", data=world["data"])
    photos = sorted(world["photos"].glob("*/*/*.png"))[:2]
    for name, category in (("\x1b[31mRED\x1b]0;title\x07", "mug"), ("fine", "mu\x00g")):
        with pytest.raises(PiroError, match="control characters"):
            add_objects("g.piro-index", [index_module.Enrolment(name, category, photos)])
    assert not any(o.source.startswith("add") for o in GalleryIndex("g.piro-index").objects)
