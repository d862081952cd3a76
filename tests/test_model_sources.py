"""The 3-D model sources (ModelNet-40 in its three layouts, FG3D) and the synthetic set, on tiny inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import write_image
from PIL import Image

from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import BadItemError, DataError

SIZE = 32


def opts(**kwargs) -> PrepareOptions:
    return PrepareOptions(size=SIZE, **kwargs)


def tiny_meshes(root: Path, layout: dict[str, dict[str, int]], suffix: str = ".off") -> None:
    """root/<category>/<split>/<category>_NNNN.off, alternating boxes and cylinders (a few hundred faces)."""
    for category, splits in layout.items():
        for split, count in splits.items():
            folder = root / category / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                mesh = trimesh.creation.box((1.0, 0.4 + 0.1 * i, 0.6)) if i % 2 == 0 else trimesh.creation.cylinder(0.3, 1.0)
                mesh.export(folder / f"{category}_{i + 1:04d}{suffix}")


def test_modelnet40_meshes_render_12_views(tmp_path):
    raw = tmp_path / "ModelNet40"
    tiny_meshes(raw, {"chair": {"train": 3, "test": 1}, "airplane": {"train": 2}})
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts())
    assert summary.layout == "meshes, rendered by piro"
    assert summary.objects_per_split == {"train": 5, "test": 1} and summary.num_views == 12
    store = ViewSetStore(tmp_path / "m.h5")
    assert store.categories == ["airplane", "chair"]  # the dataset's index order
    views = store.split("train").views_uint8(0)
    assert views.shape == (12, SIZE, SIZE, 3)
    assert (views[:, 0, 0] == 255).all()  # white background
    assert (views < 250).any(axis=-1).sum() > 12 * 20  # a grey object in every view
    assert not np.array_equal(views[0], views[3])  # a box seen from another azimuth
    assert store.split("train").object_names[:2] == ["airplane_0001", "airplane_0002"]


def test_modelnet40_per_category_keeps_first_n(tmp_path):
    raw = tmp_path / "ModelNet40"
    tiny_meshes(raw, {"chair": {"train": 3, "test": 2}})
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts(), {"per_category": 2})
    assert summary.objects_per_split == {"train": 2, "test": 2}
    assert ViewSetStore(tmp_path / "m.h5").split("train").object_names == ["chair_0001", "chair_0002"]


def test_modelnet40_bad_mesh_names_file_and_skips(tmp_path):
    raw = tmp_path / "ModelNet40"
    tiny_meshes(raw, {"chair": {"train": 2}})
    (raw / "chair" / "train" / "chair_0003.off").write_text("OFF\nthis is garbage\n")
    with pytest.raises(BadItemError, match="chair_0003.off"):
        prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts())
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts(skip_bad=True))
    assert summary.objects_per_split == {"train": 2}
    assert [Path(p).name for p, _ in summary.skipped] == ["chair_0003.off"]


def test_modelnet40_mvcnn_flat_views_grouped_by_model(tmp_path):
    raw = tmp_path / "modelnet40v1"
    for category in ("flower_pot", "cup"):
        for model in (1, 2):
            for view in range(1, 13):
                write_image(raw / category / "train" / f"{category}_{model:04d}_{view:03d}.jpg", model * 100 + view)
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts())
    assert summary.layout == "pre-rendered views"
    assert summary.objects_per_split == {"train": 4} and summary.num_views == 12
    store = ViewSetStore(tmp_path / "m.h5")
    assert store.categories == ["cup", "flower_pot"]
    assert store.split("train").object_names == ["cup_0001", "cup_0002", "flower_pot_0001", "flower_pot_0002"]


def test_modelnet40_mvcnn_pytorch_shaded_names(tmp_path):
    raw = tmp_path / "modelnet40_images_new_12x"
    for view in range(1, 13):
        for model in (1, 2):
            write_image(raw / "bed" / "test" / f"bed_{model:04d}.obj.shaded_v{view:03d}.png", view)
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts())
    assert summary.objects_per_split == {"test": 2} and summary.num_views == 12


def test_flat_view_images_without_view_numbers_are_explained(tmp_path):
    raw = tmp_path / "raw"
    write_image(raw / "bed" / "train" / "picture.png", 1)
    with pytest.raises(DataError, match=r"picture.png.*<model>_<view number>"):
        prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts())


@pytest.mark.parametrize("o2c_kind", ["indices", "names", "pairs"])
def test_modelnet40_piro_release_layout(tmp_path, o2c_kind):
    raw = tmp_path / "release"
    labels = {"train": {"0": 0, "1": 0, "2": 39}, "test": {"0": 39}}
    for split, objects in labels.items():
        for obj in objects:
            for view in range(12):
                write_image(raw / split / obj / f"{view}.jpg", int(obj) * 12 + view)
        indices = [objects[str(i)] for i in range(len(objects))]
        if o2c_kind == "indices":
            o2c = np.array(indices)
        elif o2c_kind == "names":  # a plain unicode array: loads without unpickling
            o2c = np.array([{0: "airplane", 39: "xbox"}[i] for i in indices], dtype=str)
        else:  # rows of (object id, category index)
            o2c = np.array([[int(k), v] for k, v in objects.items()], dtype=np.int64)
        np.save(raw / f"{split}_o2c.npy", o2c)
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts())
    assert summary.layout.startswith("PiRO release")
    store = ViewSetStore(tmp_path / "m.h5")
    assert store.categories == ["airplane", "xbox"]
    train = store.split("train")
    assert [store.categories[c] for c in train.category] == ["airplane", "airplane", "xbox"]
    # views in numeric order: view 10 after view 9, not after view 1
    assert train.views_uint8(1).shape == (12, SIZE, SIZE, 3)
    with Image.open(raw / "train" / "1" / "10.jpg") as image:
        expected = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    np.testing.assert_array_equal(train.views_uint8(1)[10], expected)


def test_release_layout_missing_object_in_map(tmp_path):
    raw = tmp_path / "release"
    write_image(raw / "train" / "7" / "0.jpg", 1)
    np.save(raw / "train_o2c.npy", np.array([0, 1]))
    with pytest.raises(DataError, match="object id '7' is not in train_o2c.npy"):
        prepare_dataset("modelnet40", raw, tmp_path / "m.h5", opts())


def test_fg3d_meshes_are_named_family_subtype(tmp_path):
    raw = tmp_path / "FG3D"
    for family, subtype in (("Airplane", "airliner"), ("Airplane", "fighter"), ("Car", "suv")):
        folder = raw / family / "train" / subtype
        folder.mkdir(parents=True)
        for i in range(2):
            trimesh.creation.box((1.0, 0.3 + 0.2 * i, 0.5)).export(folder / f"shape{i}.obj")
    summary = prepare_dataset("fg3d", raw, tmp_path / "f.h5", opts(), {"per_category": 1})
    assert summary.categories == ["airplane_airliner", "airplane_fighter", "car_suv"]
    assert summary.objects_per_split == {"train": 3} and summary.num_views == 12


def test_fg3d_rendered_view_folders_and_release(tmp_path):
    raw = tmp_path / "FG3D"
    for i in range(2):
        for view in range(12):
            write_image(raw / "Chair" / "test" / "rocking" / f"chair{i}" / f"{view:02d}.png", view)
    summary = prepare_dataset("fg3d", raw, tmp_path / "f.h5", opts())
    assert summary.categories == ["chair_rocking"] and summary.objects_per_split == {"test": 2}

    release = tmp_path / "release"
    for view in range(12):
        write_image(release / "train" / "0" / f"{view}.jpg", view)
        write_image(release / "train" / "1" / f"{view}.jpg", view + 50)
    np.save(release / "train_o2c.npy", np.array([3, 3]))
    (release / "categories.txt").write_text("\n".join(f"sub{i}" for i in range(66)))
    summary = prepare_dataset("fg3d", release, tmp_path / "r.h5", opts())
    assert summary.categories == ["sub3"] and summary.objects_per_split == {"train": 2}


def test_synthetic_is_deterministic_and_sized_by_options(tmp_path):
    options = {"seed": 3, "categories": 3, "objects_per_category": 4, "test_fraction": 0.25}
    a = prepare_dataset("synthetic", None, tmp_path / "a.h5", opts(), options)
    prepare_dataset("synthetic", None, tmp_path / "b.h5", opts(), options)
    assert a.objects_per_split == {"train": 9, "test": 3} and a.num_views == 12 and len(a.categories) == 3
    sa, sb = ViewSetStore(tmp_path / "a.h5"), ViewSetStore(tmp_path / "b.h5")
    assert sa.fingerprint == sb.fingerprint
    np.testing.assert_array_equal(sa.split("test").views_uint8(2), sb.split("test").views_uint8(2))
    other = prepare_dataset("synthetic", None, tmp_path / "c.h5", opts(), {**options, "seed": 4})
    assert other.objects_per_split == a.objects_per_split
    sc = ViewSetStore(tmp_path / "c.h5")
    assert not np.array_equal(sa.split("train").views_uint8(0), sc.split("train").views_uint8(0))
    views = sa.split("train").views_uint8(1)
    # hard (the default): every view its own cluttered background; easy: the fixed protocol on white
    assert not (views[:, 0, 0] == 255).all() and not np.array_equal(views[0], views[6])
    assert len({tuple(view[0, 0]) for view in views}) > 6
    easy = prepare_dataset("synthetic", None, tmp_path / "e.h5", opts(), {**options, "difficulty": "easy"})
    assert easy.objects_per_split == a.objects_per_split
    easy_views = ViewSetStore(tmp_path / "e.h5").split("train").views_uint8(1)
    assert (easy_views[:, 0, 0] == 255).all() and not np.array_equal(easy_views[0], easy_views[6])


def test_synthetic_bad_options(tmp_path):
    with pytest.raises(DataError, match="--categories 999"):
        prepare_dataset("synthetic", None, tmp_path / "s.h5", opts(), {"categories": 999})
    with pytest.raises(DataError, match="--objects-per-category 1"):
        prepare_dataset("synthetic", None, tmp_path / "s.h5", opts(), {"objects_per_category": 1})
