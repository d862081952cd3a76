"""An index under edits, damage and races (issue #30): every bad manifest or shard is refused in one line naming
the field or file, nothing is built on top of the damage, and a reader racing a writer sees one whole version."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.errors import PiroError
from piro_cli.inference.index import Enrolment, GalleryIndex, add_objects, build_index, remove_objects
from piro_cli.training import train

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    runs = [train(tiny_config(tiny_data, project=str(root / "runs"), name=f"s{seed}", seed=seed, epochs=1)).run_dir for seed in (0, 1)]
    pristine = root / "pristine.piro-index"
    build_index(runs[0], pristine, data=tiny_data)
    other = root / "other.piro-index"
    build_index(runs[1], other, data=tiny_data)
    photo = root / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    return {"runs": runs, "pristine": pristine, "other": other, "photo": photo, "data": tiny_data}


def fresh(world) -> Path:
    path = Path("idx.piro-index")
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(world["pristine"], path)
    return path


def edit(path: Path, change) -> None:
    manifest = json.loads((path / "index.json").read_text())
    change(manifest)
    (path / "index.json").write_text(json.dumps(manifest))


def one_line_refusal(argv: list[str]) -> str:
    result = runner.invoke(app, [str(a) for a in argv], env={"COLUMNS": "250"})
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


def set_in(manifest: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    target = manifest
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


CALIBRATED = {
    "rule": "equal error", "scoring": {"distance": "combined", "rejection": "scaled"},
    "by_photos": {"1": {"score": 1.2, "far": 0.2, "frr": 0.2, "wrong_object": 0.0, "impostor_scores": [0.5, 1.5]}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("objects.0.category", -1, "objects[0].category"),
        ("objects.0.category", 99, "objects[0].category"),
        ("objects.0.name", 5, "objects[0].name"),
        ("objects.0.name", "\x1b[31mRED", "objects[0].name"),
        ("objects.0.views", 0, "objects[0].views"),
        ("objects.1.id", 0, "objects[1].id"),
        ("objects.0.shard", "../../x.npz", "objects[0].shard"),
        ("categories", "abc", "categories"),
        ("checkpoint.tta", "yes", "checkpoint.tta"),
        ("checkpoint.cat_dim", -5, "checkpoint.cat_dim"),
        ("checkpoint.path", 5, "checkpoint.path"),
        ("next_id", 0, "next_id"),
        ("next_shard", "abc", "next_shard"),
        ("format_version", "x", "format_version"),
        ("shards", ["/etc/passwd"], "shards[0]"),
        ("threshold", {"distance": "abc"}, "threshold.distance"),
        ("threshold", {"distance": [1]}, "threshold.distance"),
        ("threshold", {**CALIBRATED, "by_photos": {"1": {**CALIBRATED["by_photos"]["1"], "score": math.nan}}}, "score"),
        ("threshold", {**CALIBRATED, "by_photos": {"1": {**CALIBRATED["by_photos"]["1"], "score": -1}}}, "score"),
        ("threshold", {**CALIBRATED, "scoring": {"distance": "views", "rejection": "magic"}}, "threshold.scoring.rejection"),
    ],
)
def test_an_edited_manifest_is_refused_naming_the_field_and_never_built_upon(world, field, value, named):
    path = fresh(world)
    edit(path, lambda m: set_in(m, field, value))
    before = (path / "index.json").read_bytes()
    for argv in (
        ["index", "info", path, "--objects"],
        ["identify", path, world["photo"]],
        ["index", "add", path, "--object", "new", "--category", "c0", world["photo"]],
        ["index", "remove", path, "whatever"],
    ):
        output = one_line_refusal(argv)
        assert named in output and "restore it or build it again" in output, output
        assert len(output.strip().splitlines()) <= 2  # one message (wrapped at most once by the console)
    assert (path / "index.json").read_bytes() == before


def test_a_deeply_nested_manifest_is_refused(world):
    path = fresh(world)
    (path / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in one_line_refusal(["index", "info", path])


def shard_of(path: Path) -> Path:
    return next((path / "shards").glob("*.npz"))


def rewrite_shard(path: Path, **changes) -> None:
    shard = shard_of(path)
    with np.load(shard) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    with open(shard, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "cannot be read"),
        ("empty", "cannot be read"),
        ("missing", "missing, though the manifest names it"),
        ("float ids", "view_object is not a list of integer object ids"),
        ("other dimensions", "sv_obj is float32"),
        ("sliced", "sv_cat is float32"),
        ("other weights", "made by other weights"),
    ],
)
def test_a_damaged_shard_is_refused_in_one_line(world, damage, message):
    path = fresh(world)
    shard = shard_of(path)
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "missing":
        shard.unlink()
    elif damage == "float ids":
        with np.load(shard) as data:
            ids = data["view_object"].astype(np.float64)
        rewrite_shard(path, view_object=ids)
    elif damage == "other dimensions":
        with np.load(shard) as data:
            rows = data["sv_obj"]
        rewrite_shard(path, sv_obj=np.zeros((len(rows), rows.shape[1] + 3), np.float32))
    elif damage == "sliced":
        with np.load(shard) as data:
            rows = data["sv_cat"]
        rewrite_shard(path, sv_cat=rows[:-1])
    elif damage == "other weights":  # a shard copied from an index of another run, same dimensions and name
        shutil.copy(shard_of(world["other"]), shard)
    with pytest.raises(PiroError, match=message):
        GalleryIndex(path).vectors()
    output = one_line_refusal(["identify", path, world["photo"]])
    assert message in output


def test_a_reader_racing_a_remove_reads_the_new_version(world):
    path = fresh(world)
    reader = GalleryIndex(path)  # has read index.json, not yet the shards
    name = reader.objects[0].name
    remove_objects(path, [name])  # rewrites the shard under a new name and deletes the old one
    vectors = reader.vectors()  # before: "the index is damaged, build it again"
    assert name not in {o.name for o in reader.objects}
    assert len(vectors.view_object) == sum(o.views for o in reader.objects)


def test_a_missing_shard_without_a_writer_is_still_damage(world):
    path = fresh(world)
    reader = GalleryIndex(path)
    shard_of(path).unlink()
    with pytest.raises(PiroError, match="missing, though the manifest names it"):
        reader.vectors()


def test_new_shards_carry_the_weights_fingerprint(world):
    path = fresh(world)
    add_objects(path, [Enrolment("new", "c0", [world["photo"]])])
    fingerprint = GalleryIndex(path).checkpoint["fingerprint"]
    for shard in (path / "shards").glob("*.npz"):
        with np.load(shard) as data:
            assert str(data["fingerprint"]) == fingerprint


# ----------------------------------------------------------------------------- fuzz

JUNK = [None, True, -1, 0, 2**63, 1e308, math.nan, -0.5, "", "x", "\x07bell", [], [1, "a"], {}, {"a": {"b": [None]}}]


def junk(rng: random.Random):
    value = rng.choice(JUNK)
    for _ in range(rng.randrange(3)):  # some nesting
        value = rng.choice([[value], {"k": value}])
    return value


def fields_of(value, prefix=""):
    """Every dotted path to a value inside a manifest."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if "." not in str(key):
                yield from fields_of(inner, f"{prefix}{key}.")
    elif isinstance(value, list):
        for k, inner in enumerate(value[:3]):
            yield from fields_of(inner, f"{prefix}{k}.")
    if prefix:
        yield prefix[:-1]


def test_fuzzed_manifests_get_one_clean_line_and_stay_unchanged(world):
    rng = random.Random(0)
    path = fresh(world)
    pristine = json.loads((path / "index.json").read_text())
    pristine["threshold"] = CALIBRATED
    paths = sorted(set(fields_of(pristine)))
    for trial in range(80):
        manifest = json.loads(json.dumps(pristine))
        for field in rng.sample(paths, rng.randint(1, 2)):
            try:
                set_in(manifest, field, junk(rng))
            except (KeyError, IndexError, TypeError, ValueError):
                pass  # an earlier change removed its parent
        text = json.dumps(manifest)
        (path / "index.json").write_text(text)
        try:
            gallery = GalleryIndex(path)
            gallery.vectors()
            gallery.info()
        except PiroError as exc:
            assert "\n" not in str(exc), str(exc)
            with pytest.raises(PiroError):
                add_objects(path, [Enrolment(f"n{trial}", "c0", [world["photo"]])])
            assert (path / "index.json").read_text() == text


def test_sigkill_during_enrolment_leaves_the_index_whole(world):
    """A process enrolling and removing objects in a loop is killed with SIGKILL at five moments: each time the
    index opens whole (the version before a change or after it), and the next enrolment works."""
    import signal
    import subprocess
    import sys
    import time

    path = fresh(world)
    names_before = {o.name for o in GalleryIndex(path).objects}
    script = (
        "import sys\n"
        "from piro_cli.inference.index import Enrolment, add_objects, remove_objects\n"
        "import piro_cli.inference.run, piro_cli.inference.embedding\n"
        "print('ready', flush=True)\n"
        "k = 0\n"
        "while True:\n"
        f"    add_objects({str(path)!r}, [Enrolment(f'loop{{k}}', 'c0', [{str(world['photo'])!r}] * 3)])\n"
        "    print('added', flush=True)\n"
        f"    remove_objects({str(path)!r}, [f'loop{{k}}'])\n"
        "    k += 1\n"
    )
    writes = 0
    for moment in (0.05, 0.3, 0.6, 1.0, 1.5):  # after the imports: while it writes
        writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        time.sleep(moment)
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate()
        writes += out.count("added")
        gallery = GalleryIndex(path)
        vectors = gallery.vectors()  # the shards the manifest names are all there and match it
        assert len(vectors.view_object) == sum(o.views for o in gallery.objects)
        assert names_before <= {o.name for o in gallery.objects}
        for leftover in [o.name for o in gallery.objects if o.name.startswith("loop")]:
            remove_objects(path, [leftover])
    assert writes > 0  # the kills came while it was enrolling, not before
    add_objects(path, [Enrolment("after", "c0", [world["photo"]])])
    assert "after" in {o.name for o in GalleryIndex(path).objects}
    shards = sorted(p.name for p in (path / "shards").iterdir())
    assert shards == sorted(GalleryIndex(path).manifest["shards"])  # the killed writers' files are gone
