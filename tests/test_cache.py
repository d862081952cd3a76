"""Embeddings computed once (piro_cli/inference/cache.py): a second evaluation reuses them and gives the same
numbers; other weights, other rows or flips are other entries; a damaged entry is computed again."""

from __future__ import annotations

import pytest
from conftest import tiny_config

import piro_cli.inference.cache as cache_module
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.inference.cache import CACHE_DIR, cached_embeddings
from piro_cli.inference.run import EmbedSettings, load_run
from piro_cli.training import train


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cache") / "runs"
    return {"data": tiny_data, "run": train(tiny_config(tiny_data, project=str(runs), name="run", epochs=1)).run_dir}


def test_a_second_evaluation_embeds_nothing(world, monkeypatch):
    first = evaluate([world["run"]], data=world["data"], save=False)
    assert len(list((world["run"] / CACHE_DIR).glob("*.npz"))) == 2  # gallery (train) and probes (test)

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded again")

    monkeypatch.setattr(cache_module, "embed_objects", no_embedding)
    second = evaluate([world["run"]], data=world["data"], save=False)
    assert second.runs[0].values == first.runs[0].values
    with pytest.raises(AssertionError, match="embedded again"):  # flips on: another entry
        evaluate([world["run"]], data=world["data"], save=False, embedding=EmbedSettings(tta=True))


def test_entries_are_keyed_and_a_damaged_one_is_recomputed(world):
    loaded = load_run(world["run"], "cpu")
    store = loaded.open_data(world["data"])
    whole = cached_embeddings(loaded, store, "test")
    some = cached_embeddings(loaded, store, "test", [1, 0])
    assert some.names == [whole.names[1], whole.names[0]]
    assert (some.embeddings.sv_obj[0] == whole.embeddings.sv_obj[1]).all()
    for entry in (world["run"] / CACHE_DIR).glob("*.npz"):
        entry.write_bytes(b"damaged")
    again = cached_embeddings(loaded, store, "test")
    assert (again.embeddings.sv_obj == whole.embeddings.sv_obj).all() and again.names == whole.names
