"""The HDF5 store: layout, atomic writes, readers and their normalisation."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from piro_cli.data.store import IMAGENET_MEAN, IMAGENET_STD, StoreWriter, ViewSetStore, normalize_views
from piro_cli.errors import DataError, PiroError


def write_store(path, objects=5, views=3, size=16, split="train", **kwargs):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(objects, views, size, size, 3), dtype=np.uint8)
    with StoreWriter(
        path, categories=["a", "b"], num_views=views, image_size=size, source_dataset="test", creation_options={"k": 1}, **kwargs
    ) as writer:
        for i in range(objects):
            writer.append(split, images[i], i % 2, f"obj{i}", f"/raw/obj{i}")
        writer.commit()
    return images


def test_layout_fields(tmp_path):
    path = tmp_path / "d.h5"
    images = write_store(path)
    with h5py.File(path) as f:
        assert f.attrs["format"] == "piro-viewsets"
        assert f.attrs["num_views"] == 3 and f.attrs["image_size"] == 16
        assert f["train/images"].shape == (5, 3, 16, 16, 3) and f["train/images"].dtype == np.uint8
        assert f["train/images"].chunks == (1, 3, 16, 16, 3)
        assert list(f["train/category"][:]) == [0, 1, 0, 1, 0]
        assert [s.decode() for s in f["train/object_name"][:]] == [f"obj{i}" for i in range(5)]
        assert [s.decode() for s in f["categories"][:]] == ["a", "b"]
        np.testing.assert_array_equal(f["train/images"][:], images)
        assert len(f.attrs["fingerprint"]) == 16


def test_reader_random_access_and_views(tmp_path):
    path = tmp_path / "d.h5"
    images = write_store(path)
    store = ViewSetStore(path)
    split = store.split("train")
    assert len(split) == 5 and split.object_names[2] == "obj2" and split.source_paths[2] == "/raw/obj2"
    np.testing.assert_array_equal(split.views_uint8(3), images[3])
    np.testing.assert_array_equal(split.views_uint8(3, [2, 0]), images[3][[2, 0]])
    tensor = split.views(1)
    assert tensor.shape == (3, 3, 16, 16) and tensor.dtype == torch.float32
    # pixel (0,0) of view 0, channel 1, normalised by hand
    expected = (images[1, 0, 0, 0, 1] / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert tensor[0, 1, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    batch = split.batch([4, 0], views=[[0, 1], [2, 1]])
    assert batch.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(batch[1, 0], normalize_views(images[0, 2]))
    with pytest.raises(IndexError):
        split.views_uint8(5)


def test_stream_covers_every_object_in_order(tmp_path):
    path = tmp_path / "d.h5"
    images = write_store(path, objects=7)
    split = ViewSetStore(path).split("train")
    seen = []
    for indices, batch in split.stream(batch_objects=3):
        assert batch.shape[1:] == (3, 3, 16, 16)
        torch.testing.assert_close(batch, normalize_views(images[indices]))
        seen.extend(indices.tolist())
    assert seen == list(range(7))


def test_store_pickles_for_worker_processes(tmp_path):
    path = tmp_path / "d.h5"
    images = write_store(path)
    store = ViewSetStore(path)
    store.split("train").views_uint8(0)
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.split("train").views_uint8(2), images[2])


def test_normalize_matches_torchvision_formula():
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    out = normalize_views(pixels)
    assert out.shape == (2, 3, 4, 4) and out.is_contiguous()
    ref = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(3, 1, 1)
    torch.testing.assert_close(out, ref)


def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "d.h5"
    write_store(path)
    with pytest.raises(PiroError, match="--overwrite"):
        write_store(path)
    write_store(path, objects=2, overwrite=True)
    assert len(ViewSetStore(path).split("train")) == 2


def test_exception_midway_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "d.h5"
    old = write_store(path)
    with pytest.raises(KeyboardInterrupt):
        with StoreWriter(
            path, categories=["a"], num_views=3, image_size=16, source_dataset="t", creation_options={}, overwrite=True
        ) as writer:
            writer.append("train", old[0], 0, "x", "x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]
    np.testing.assert_array_equal(ViewSetStore(path).split("train").views_uint8(4), old[4])


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file.*piro prepare"):
        ViewSetStore(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="junk.h5"):
        ViewSetStore(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(DataError, match="not a piro view-set file"):
        ViewSetStore(foreign)
    path = tmp_path / "d.h5"
    write_store(path)
    with pytest.raises(DataError, match="no 'test' split.*train"):
        ViewSetStore(path).split("test")


def test_info_summary(tmp_path):
    path = tmp_path / "d.h5"
    write_store(path, objects=5)
    info = ViewSetStore(path).info()
    assert info.num_views == 3 and info.image_size == 16 and info.categories == ["a", "b"]
    assert info.splits[0].name == "train" and info.splits[0].num_objects == 5
    assert info.splits[0].objects_per_category == {"a": 3, "b": 2}
    assert info.creation_options == {"k": 1}
