"""`prepare_dataset` on every image source, and every bad-input path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import OBJECTPI_RAW, make_image_tree, write_image
from PIL import Image

from piro_cli.data.prepare import PrepareOptions, prepare_dataset, select_views
from piro_cli.data.sources import SOURCES
from piro_cli.data.sources.base import ObjectRecord, Source, SourceScan
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import BadItemError, DataError, PiroError

SIZE = 24


def opts(**kwargs) -> PrepareOptions:
    return PrepareOptions(size=SIZE, **kwargs)


def resized(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


# ----------------------------------------------------------------------------- image sources


def test_objectpi_tree_keeps_view_order_and_labels(tmp_path, image_tree):
    # One object spells the suffix in lower case and has views listed out of lexical order.
    odd = image_tree / "train" / "Mug" / "Mug odd"
    for k in (1, 2, 3, 10):
        write_image(odd / f"Mug odd_view{k}.jpg", 100 + k)
    out = tmp_path / "o.h5"
    summary = prepare_dataset("objectpi", image_tree, out, opts(views=4))
    assert summary.objects_per_split == {"train": 6, "test": 4}
    store = ViewSetStore(out)
    assert store.categories == ["Chair (Toy)", "Mug"]
    train = store.split("train")
    i = train.object_names.index("Mug odd")
    assert train.category[i] == store.categories.index("Mug")
    # _view10 is the last view, after _view3 (numeric, not lexical, order)
    np.testing.assert_array_equal(train.views_uint8(i)[3], resized(odd / "Mug odd_view10.jpg"))
    j = train.object_names.index("Chair (Toy) obj1")
    src = image_tree / "train" / "Chair (Toy)" / "Chair (Toy) obj1"
    for k in range(4):
        np.testing.assert_array_equal(train.views_uint8(j)[k], resized(src / f"Chair (Toy) obj1_View{k + 1}.png"))
    assert train.source_paths[j] == str(src)


def test_objectpi_missing_split_is_fine(tmp_path):
    raw = make_image_tree(tmp_path / "raw", {"test": {"Bowl": 2}}, views=3)
    summary = prepare_dataset("objectpi", raw, tmp_path / "o.h5", opts())
    assert summary.objects_per_split == {"test": 2}
    assert ViewSetStore(tmp_path / "o.h5").splits == ["test"]


def test_folder_source_with_val_split_and_natural_order(tmp_path):
    raw = make_image_tree(
        tmp_path / "raw", {"train": {"cat": 2}, "val": {"cat": 2}}, views=3, name_view=lambda obj, k: f"img{k * 5}.jpeg"
    )
    summary = prepare_dataset("folder", raw, tmp_path / "f.h5", opts())
    assert summary.objects_per_split == {"train": 2, "val": 2}
    split = ViewSetStore(tmp_path / "f.h5").split("val")
    src = raw / "val" / "cat" / "cat obj0"
    np.testing.assert_array_equal(split.views_uint8(0)[1], resized(src / "img10.jpeg"))  # img5, img10, img15


@pytest.mark.skipif(not OBJECTPI_RAW.exists(), reason="shared ObjectPI data not present")
def test_real_objectpi_handful(tmp_path):
    """A handful of the real photos through the objectpi source (the full set is a benchmark)."""
    raw = tmp_path / "raw" / "train"
    for category in ("Bottle", "Bowl"):
        objects = sorted((OBJECTPI_RAW / "train" / category).iterdir())[:2]
        for obj in objects:
            (raw / category).mkdir(parents=True, exist_ok=True)
            (raw / category / obj.name).symlink_to(obj)
    summary = prepare_dataset("objectpi", raw.parent, tmp_path / "o.h5", opts())
    assert summary.objects_per_split == {"train": 4} and summary.num_views == 8
    views = ViewSetStore(tmp_path / "o.h5").split("train").views_uint8(0)
    assert views.shape == (8, SIZE, SIZE, 3) and views.std() > 10


# ----------------------------------------------------------------------------- bad input


def test_unreadable_image_names_file_and_skip_bad_lists_it(tmp_path, image_tree):
    bad = image_tree / "train" / "Mug" / "Mug obj1" / "Mug obj1_View2.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(BadItemError, match="Mug obj1_View2.png.*--skip-bad"):
        prepare_dataset("objectpi", image_tree, tmp_path / "o.h5", opts())
    assert not (tmp_path / "o.h5").exists()
    assert list(tmp_path.glob(".o.h5.tmp*")) == []
    summary = prepare_dataset("objectpi", image_tree, tmp_path / "o.h5", opts(skip_bad=True))
    assert summary.objects_per_split == {"train": 4, "test": 4}
    assert [Path(p).name for p, _ in summary.skipped] == ["Mug obj1_View2.png"]
    assert "Mug obj1" not in ViewSetStore(tmp_path / "o.h5").split("train").object_names


def test_different_view_counts_error_then_views_option(tmp_path, image_tree):
    (image_tree / "test" / "Mug" / "Mug obj0" / "Mug obj0_View4.png").unlink()
    with pytest.raises(DataError, match=r"Mug obj0: has 3 views.*--views N"):
        prepare_dataset("objectpi", image_tree, tmp_path / "o.h5", opts())
    # --views 3 keeps 3 evenly spaced views of the 4-view objects and all of the 3-view one
    summary = prepare_dataset("objectpi", image_tree, tmp_path / "o.h5", opts(views=3))
    assert summary.num_views == 3
    store = ViewSetStore(tmp_path / "o.h5")
    src = image_tree / "train" / "Mug" / "Mug obj0"
    views = store.split("train").views_uint8(store.split("train").object_names.index("Mug obj0"))
    for stored, k in zip(views, select_views(4, 3) + 1, strict=True):
        np.testing.assert_array_equal(stored, resized(src / f"Mug obj0_View{k}.png"))
    # --views larger than an object has: that object is an error, or skipped with --skip-bad
    with pytest.raises(BadItemError, match="has 3 views, expected 4"):
        prepare_dataset("objectpi", image_tree, tmp_path / "p.h5", opts(views=4))
    summary = prepare_dataset("objectpi", image_tree, tmp_path / "p.h5", opts(views=4, skip_bad=True))
    assert summary.objects_per_split == {"train": 5, "test": 3} and len(summary.skipped) == 1


def test_select_views_is_even_and_ordered():
    assert select_views(12, 4).tolist() == [0, 3, 6, 9]
    assert select_views(8, 8).tolist() == list(range(8))
    assert select_views(8, 3).tolist() == [0, 2, 5]


def test_single_object_category_warns(tmp_path):
    raw = make_image_tree(tmp_path / "raw", {"train": {"Mug": 2, "Lonely": 1}}, views=2)
    summary = prepare_dataset("objectpi", raw, tmp_path / "o.h5", opts())
    assert any("'Lonely' has a single object in the train split" in w for w in summary.warnings)


def test_existing_output_needs_overwrite(tmp_path, image_tree):
    out = tmp_path / "o.h5"
    prepare_dataset("objectpi", image_tree, out, opts())
    with pytest.raises(PiroError, match="already exists.*--overwrite"):
        prepare_dataset("objectpi", image_tree, out, opts())
    prepare_dataset("objectpi", image_tree, out, opts(overwrite=True))


def test_interrupt_midway_keeps_old_file_intact(tmp_path, image_tree):
    out = tmp_path / "o.h5"
    prepare_dataset("objectpi", image_tree, out, opts())
    before = out.read_bytes()
    calls = {"n": 0}

    def interrupting(size: int) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return np.zeros((2, size, size, 3), np.uint8)

    records = [ObjectRecord("train", "c", f"o{i}", f"o{i}", interrupting, 2) for i in range(6)]
    SOURCES["_interrupt"] = Source("_interrupt", "", "", lambda raw_dir: SourceScan(records, ["c"]))
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare_dataset("_interrupt", tmp_path, out, opts(overwrite=True, workers=1))
    finally:
        del SOURCES["_interrupt"]
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["o.h5", "raw"])


@pytest.mark.parametrize("source", ["objectpi", "folder", "modelnet40", "fg3d"])
def test_missing_empty_and_wrong_directories_explain_the_layout(tmp_path, source):
    with pytest.raises(DataError, match="no such directory"):
        prepare_dataset(source, tmp_path / "nope", tmp_path / "o.h5", opts())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"RAW/"):
        prepare_dataset(source, empty, tmp_path / "o.h5", opts())
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        prepare_dataset(source, a_file, tmp_path / "o.h5", opts())


def test_pointing_at_a_split_folder_suggests_the_parent(tmp_path, image_tree):
    with pytest.raises(DataError, match="pass its parent folder"):
        prepare_dataset("objectpi", image_tree / "train", tmp_path / "o.h5", opts())


def test_unknown_source(tmp_path):
    with pytest.raises(DataError, match="unknown dataset source 'imagenet'.*objectpi"):
        prepare_dataset("imagenet", tmp_path, tmp_path / "o.h5", opts())
