"""Hostile and clumsy inputs to the readers of files piro did not write itself (issue #11).

Each test fails on the code before the fix: a data file must never run code, a changed data file must never
reuse stale cached features, and a broken or foreign file must be refused with one line naming it.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh
from conftest import make_image_tree, tiny_config, write_image
from PIL import Image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.cli.common import err_console
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import DataError
from piro_cli.reporting import SilentReporter
from piro_cli.training import train

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_error_console(monkeypatch):
    """No wrapping of the error line at the test console's 80 columns, so that one line stays one line."""
    monkeypatch.setattr(err_console, "width", 2000)


def one_error_line(result) -> str:
    """The CLI failed with exit 1 and printed one `error:` line (last), no traceback; returns that line."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    message = result.output[result.output.index("error:") :].strip()
    assert "\n" not in message, result.output
    return message


# ----------------------------------------------------------------------------- item 1: pickled *_o2c.npy


class _TouchOnUnpickle:
    """Unpickling this calls open(marker, 'w'): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def release_layout(root: Path, o2c: np.ndarray, allow_pickle: bool = False) -> Path:
    """A two-object PiRO release folder: train/<id>/<view>.jpg plus train_o2c.npy."""
    for obj in range(2):
        for view in range(2):
            write_image(root / "train" / str(obj) / f"{view}.jpg", obj * 10 + view, size=16)
    np.save(root / "train_o2c.npy", o2c, allow_pickle=allow_pickle)
    return root


def test_pickled_o2c_never_runs_code(tmp_path):
    marker = tmp_path / "code-ran"
    raw = release_layout(tmp_path / "release", np.array([_TouchOnUnpickle(marker), 0], dtype=object), allow_pickle=True)
    result = runner.invoke(app, ["prepare", "modelnet40", str(raw), "--out", str(tmp_path / "m.h5"), "--size", "16"])
    assert not marker.exists()
    line = one_error_line(result)
    assert "train_o2c.npy" in line and "pickled" in line and "np.save" in line and "dtype=np.int64" in line
    assert not (tmp_path / "m.h5").exists()


def test_pickled_dict_o2c_is_refused_with_how_to_resave(tmp_path):
    raw = release_layout(tmp_path / "release", {"0": 0, "1": 1}, allow_pickle=True)  # the 0-d object array np.save makes
    with pytest.raises(DataError, match=r"train_o2c.npy: holds pickled Python objects.*dtype=str"):
        prepare_dataset("modelnet40", raw, tmp_path / "m.h5", PrepareOptions(size=16))


def test_unicode_o2c_still_loads(tmp_path):
    raw = release_layout(tmp_path / "release", np.array(["chair", "bed"]))
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", PrepareOptions(size=16))
    assert summary.categories == ["bed", "chair"] and summary.objects_per_split == {"train": 2}


# ----------------------------------------------------------------------------- item 2: the fingerprint covers the pixels


def image_folder(root: Path) -> Path:
    """<split>/<category>/<object>/<2 views>: 2 categories x 3 train objects, 1 test object each."""
    return make_image_tree(root, {"train": {"Mug": 3, "Cup": 3}, "test": {"Mug": 1, "Cup": 1}}, views=2)


def repaint_corner(image: Path) -> None:
    """Invert an 8x8 corner of one view: same file name, other pixels."""
    with Image.open(image) as opened:
        pixels = np.asarray(opened.convert("RGB")).copy()
    pixels[:8, :8] = 255 - pixels[:8, :8]
    Image.fromarray(pixels).save(image)


def test_fingerprint_changes_with_pixels_not_with_location(tmp_path):
    raw = image_folder(tmp_path / "raw")
    first = prepare_dataset("folder", raw, tmp_path / "a.h5", PrepareOptions(size=16))
    moved = shutil.copytree(raw, tmp_path / "elsewhere" / "raw")
    prepare_dataset("folder", moved, tmp_path / "b.h5", PrepareOptions(size=16, compression="lzf"))
    repaint_corner(raw / "train" / "Cup" / "Cup obj1" / "Cup obj1_View2.png")
    prepare_dataset("folder", raw, tmp_path / "c.h5", PrepareOptions(size=16))
    a, b, c = (ViewSetStore(tmp_path / f"{n}.h5") for n in "abc")
    row = a.split("train").object_names.index("Cup obj1")
    # what the old fingerprint covered is identical, the stored pixels are not
    assert a.split("train").object_names == c.split("train").object_names
    assert list(a.split("train").category) == list(c.split("train").category)
    assert not np.array_equal(a.split("train").views_uint8(row), c.split("train").views_uint8(row))
    assert a.fingerprint == b.fingerprint  # same content from another folder, stored compressed
    assert c.fingerprint != a.fingerprint
    assert first.path == tmp_path / "a.h5"


def test_up_axis_changes_the_fingerprint(tmp_path):
    raw = tmp_path / "ModelNet40"
    (raw / "chair" / "train").mkdir(parents=True)
    trimesh.creation.box((1.0, 0.3, 0.6)).export(raw / "chair" / "train" / "chair_0001.off")
    fingerprints = [
        ViewSetStore(prepare_dataset("modelnet40", raw, tmp_path / f"{n}.h5", PrepareOptions(size=16), opts).path).fingerprint
        for n, opts in (("z", {"up_axis": "z"}), ("z2", {"up_axis": "z"}), ("y", {"up_axis": "y"}))
    ]
    assert fingerprints[0] == fingerprints[1]  # rendering is deterministic: re-preparing gives the same file
    assert fingerprints[2] != fingerprints[0]


class _Messages(SilentReporter):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def info(self, message: str) -> None:
        self.messages.append(message)


def test_frozen_backbone_cache_is_not_reused_after_pixels_change(tmp_path):
    raw = image_folder(tmp_path / "raw")
    data = tmp_path / "data.h5"
    prepare_dataset("folder", raw, data, PrepareOptions(size=16))
    config = dict(epochs=1, freeze_backbone=True, feature_passes=1, batch_pairs=2, pairs_per_object=1)
    train(tiny_config(data, name="before", **config))
    cache = Path("runs/feature-cache")
    before = {p.name: p.read_bytes() for p in cache.glob("*.pt")}
    assert len(before) == 1

    again = _Messages()  # the same data again reuses the cache: the key is stable
    train(tiny_config(data, name="same", **config), reporter=again)
    assert any("using cached backbone features" in m for m in again.messages)

    repaint_corner(raw / "train" / "Mug" / "Mug obj0" / "Mug obj0_View1.png")
    prepare_dataset("folder", raw, data, PrepareOptions(size=16, overwrite=True))
    after = _Messages()
    train(tiny_config(data, name="after", **config), reporter=after)
    assert not any("using cached backbone features" in m for m in after.messages)
    assert len(list(cache.glob("*.pt"))) == 2
    assert all(cache.joinpath(name).read_bytes() == content for name, content in before.items())  # the old entry untouched


def test_file_without_content_hash_keeps_its_fingerprint(tiny_data, tmp_path):
    old = shutil.copy(tiny_data, tmp_path / "old.h5")
    with h5py.File(old, "r+") as f:  # a file written before the content hash: only its recorded fingerprint
        del f.attrs["content_sha256"]
        f.attrs["fingerprint"] = "0123456789abcdef"
    assert ViewSetStore(old).fingerprint == "0123456789abcdef"


# ----------------------------------------------------------------------------- item 3: structure checked on opening


def _set_attr(name, value):
    def edit(f):
        f.attrs[name] = value

    return edit


def _del_attr(name):
    def edit(f):
        del f.attrs[name]

    return edit


def _replace(name, make):
    """Replace dataset `name` by make(its current values)."""

    def edit(f):
        values = f[name][:]
        del f[name]
        f.create_dataset(name, data=make(values))

    return edit


def _delete(name):
    def edit(f):
        del f[name]

    return edit


BROKEN = {
    # case: (edit, words the refusal must contain)
    "num_views attr": (_set_attr("num_views", 3), ("'train' images", "12 views", "num_views attribute says 3")),
    "image_size attr": (_set_attr("image_size", 16), ("'train' images", "image_size attribute says 16")),
    "no colour channel": (_replace("train/images", lambda v: v[..., 0]), ("'train' images", "4 dimensions")),
    "one channel": (_replace("train/images", lambda v: v[..., :1]), ("'train' images", "1 colour channels")),
    "float images": (_replace("test/images", lambda v: v.astype(np.float32)), ("'test' images", "float32", "uint8")),
    "fewer image rows": (_replace("train/images", lambda v: v[:-1]), ("'train' category", "rows of images")),
    "fewer names": (_replace("train/object_name", lambda v: v[:-1]), ("'train' object_name", "rows of images")),
    "fewer source paths": (_replace("test/source_path", lambda v: v[:0]), ("'test' source_path", "rows of images")),
    "label past the end": (_replace("test/category", lambda v: np.full_like(v, 3)), ("'test' category", "index 3", "0..2")),
    "negative label": (_replace("train/category", lambda v: v - 1), ("'train' category", "index -1")),
    "float labels": (_replace("train/category", lambda v: v.astype(np.float64)), ("'train' category", "float64")),
    "no categories": (_delete("categories"), ("'categories'", "missing")),
    "no num_views": (_del_attr("num_views"), ("attribute 'num_views'", "missing")),
    "no image_size": (_del_attr("image_size"), ("attribute 'image_size'", "missing")),
    "no source_dataset": (_del_attr("source_dataset"), ("attribute 'source_dataset'", "missing")),
    "no labels": (_delete("train/category"), ("'train'", "'category' is missing")),
}


def edited_copy(good: Path, path: Path, edit) -> Path:
    """A copy of the HDF5 file `good` at `path`, with `edit(h5py.File)` applied to it."""
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize("case", list(BROKEN))
def test_structurally_wrong_file_is_refused_on_opening(tiny_data, tmp_path, case):
    edit, words = BROKEN[case]
    broken = edited_copy(tiny_data, tmp_path / "broken.h5", edit)
    with pytest.raises(DataError) as refused:
        ViewSetStore(broken)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{broken}: ") and "re-create it with `piro prepare`" in message
    for word in words:
        assert word in message, message


def test_file_without_source_paths_still_reads(tiny_data, tmp_path):
    trimmed = shutil.copy(tiny_data, tmp_path / "trimmed.h5")
    with h5py.File(trimmed, "r+") as f:
        del f["train/source_path"]
    split = ViewSetStore(trimmed).split("train")
    assert split.source_paths == [""] * len(split) and split.views_uint8(0).shape == (12, 32, 32, 3)


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_data, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    return train(tiny_config(tiny_data, epochs=1, project=str(runs))).best_path


@pytest.mark.parametrize("case", ["num_views attr", "label past the end", "no categories", "fewer image rows"])
def test_evaluate_refuses_structurally_wrong_data(tiny_data, tiny_checkpoint, tmp_path, case):
    edit, words = BROKEN[case]
    broken = edited_copy(tiny_data, tmp_path / "broken.h5", edit)
    line = one_error_line(runner.invoke(app, ["evaluate", str(tiny_checkpoint), "--data", str(broken), "--no-save"]))
    assert str(broken) in line and all(word in line for word in words)


# ----------------------------------------------------------------------------- item 11: foreign and damaged data files


def test_evaluate_foreign_hdf5_says_what_it_is_not(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    line = one_error_line(runner.invoke(app, ["evaluate", str(foreign)]))
    assert f"{foreign}: an HDF5 file not written by piro" in line and "unpickl" not in line.lower()


def test_evaluate_pickle_renamed_h5_is_not_unpickled(tmp_path):
    renamed = tmp_path / "foreign.h5"
    renamed.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    line = one_error_line(runner.invoke(app, ["evaluate", str(renamed)]))
    assert f"{renamed}: not an HDF5 file" in line and "weights_only" not in line


def test_evaluate_view_set_file_as_source_points_to_data(tiny_data):
    line = one_error_line(runner.invoke(app, ["evaluate", str(tiny_data)]))
    assert "view-set data file" in line and f"--data {tiny_data}" in line


def test_truncated_store_gives_one_line(tiny_data, tiny_checkpoint, tmp_path):
    truncated = tmp_path / "half.h5"
    content = Path(tiny_data).read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    as_source = one_error_line(runner.invoke(app, ["evaluate", str(truncated)]))
    as_data = one_error_line(runner.invoke(app, ["evaluate", str(tiny_checkpoint), "--data", str(truncated), "--no-save"]))
    info = one_error_line(runner.invoke(app, ["prepare", "--info", str(truncated)]))
    for line in (as_source, as_data, info):
        assert f"{truncated}: truncated" in line and "stored_eof" not in line


def test_data_directory_gives_one_line(tiny_checkpoint, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    line = one_error_line(runner.invoke(app, ["evaluate", str(tiny_checkpoint), "--data", str(folder), "--no-save"]))
    assert f"{folder}: is a directory; pass the .h5 file" in line and "errno" not in line


def test_damaged_image_chunk_gives_one_line(tmp_path):
    damaged = tmp_path / "damaged.h5"
    prepare_dataset("folder", image_folder(tmp_path / "raw"), damaged, PrepareOptions(size=16, compression="gzip"))
    with h5py.File(damaged, "r") as f:
        chunk = f["train/images"].id.get_chunk_info(0)
    with damaged.open("r+b") as handle:  # the shapes are intact, the first object's compressed chunk is not
        handle.seek(chunk.byte_offset)
        handle.write(b"\xff" * chunk.size)
    store = ViewSetStore(damaged)
    with pytest.raises(DataError, match=r"damaged.h5: cannot read object 0 of the train split .*re-create it"):
        store.split("train").views_uint8(0)
    with pytest.raises(DataError, match=r"damaged.h5: cannot read object 0 of the train split"):
        next(store.split("train").stream())


# ----------------------------------------------------------------------------- item 11: --skip-bad advice only where it applies


def test_skip_bad_advice_only_where_it_applies(tmp_path, tiny_checkpoint):
    raw = image_folder(tmp_path / "raw")
    bad = raw / "train" / "Mug" / "Mug obj1" / "Mug obj1_View2.png"
    bad.write_bytes(b"this is not a png")
    out = str(tmp_path / "o.h5")
    refused = one_error_line(runner.invoke(app, ["prepare", "folder", str(raw), "--out", out, "--size", "16"]))
    assert str(bad) in refused and "pass --skip-bad" in refused
    skipped = runner.invoke(app, ["prepare", "folder", str(raw), "--out", out, "--size", "16", "--skip-bad"])
    assert skipped.exit_code == 0 and str(bad) in skipped.output and "--skip-bad" not in skipped.output
    embedded = one_error_line(runner.invoke(app, ["embed", str(tiny_checkpoint), "--images", str(bad)]))
    assert str(bad) in embedded and "pass --skip-bad" in embedded  # embed --images has --skip-bad too
    good = raw / "train" / "Mug" / "Mug obj1" / "Mug obj1_View1.png"
    kept = runner.invoke(app, ["embed", str(tiny_checkpoint), "--images", str(good), str(bad), "--skip-bad"])
    assert kept.exit_code == 0 and str(bad) in kept.output and "pass --skip-bad" not in kept.output


# ----------------------------------------------------------------------------- embeddings files: structure checked too


@pytest.fixture(scope="module")
def tiny_embeddings(tiny_data, tiny_checkpoint, tmp_path_factory) -> Path:
    from piro_cli.inference.embeddings_file import embed

    out = tmp_path_factory.mktemp("emb") / "emb.h5"
    return embed(tiny_checkpoint, out=out, data=tiny_data, splits="train,test", device="cpu").path


BROKEN_EMBEDDINGS = {
    "label past the end": (_replace("test/category", lambda v: np.full_like(v, 3)), ("'test' category", "index 3")),
    "fewer mv rows": (_replace("train/mv_cat", lambda v: v[:-1]), ("'train' mv_cat", "rows")),
    "other dimension": (_replace("test/mv_obj_last", lambda v: v[:, :-1]), ("'test' mv_obj_last", "dimensions")),
    "fewer views": (_replace("train/sv_obj", lambda v: v[:, :-1]), ("'train' sv_obj", "views per object")),
    "no sv_cat": (_delete("test/sv_cat"), ("'test'", "'sv_cat' is missing")),
    "no categories": (_delete("categories"), ("'categories'", "missing")),
}


@pytest.mark.parametrize("case", list(BROKEN_EMBEDDINGS))
def test_evaluate_refuses_structurally_wrong_embeddings(tiny_embeddings, tmp_path, case):
    edit, words = BROKEN_EMBEDDINGS[case]
    broken = edited_copy(tiny_embeddings, tmp_path / "broken.h5", edit)
    line = one_error_line(runner.invoke(app, ["evaluate", str(broken), "--no-save"]))
    assert f"{broken}: " in line and "write it again with `piro embed`" in line
    for word in words:
        assert word in line, line


def test_intact_embeddings_still_evaluate(tiny_embeddings):
    result = runner.invoke(app, ["evaluate", str(tiny_embeddings), "--no-save", "--format", "json"])
    assert result.exit_code == 0, result.output
