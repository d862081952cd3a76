"""`piro evaluate` and `piro embed` end to end on a tiny synthetic set with tiny trained checkpoints."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.data.store import StoreWriter, ViewSetStore
from piro_cli.errors import DataError, PiroError
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.inference.embedding import embed_objects
from piro_cli.inference.embeddings_file import EmbeddingsFile, embed
from piro_cli.inference.run import EmbedSettings, load_model
from piro_cli.retrieval.picr import TASKS, evaluate_picr
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, train

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


def synthetic(path: Path, seed: int = 0, categories: int = 3, objects: int = 5) -> Path:
    options = {"seed": seed, "categories": categories, "objects_per_category": objects, "test_fraction": 0.2}
    prepare_dataset("synthetic", None, path, PrepareOptions(size=32), options)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny data file and two tiny runs (different seeds, 25% of train carved out as validation)."""
    root = tmp_path_factory.mktemp("world")
    data = synthetic(root / "synthetic.h5")
    runs = []
    for seed in (0, 1):
        config = TrainConfig(
            data=str(data), project=str(root / "runs"), name=f"seed{seed}", backbone="tiny", pretrained=False, cat_dim=16,
            obj_dim=16, epochs=1, batch_pairs=4, pairs_per_object=2, lr=1e-3, seed=seed, device="cpu", early_stop_rho=0.0,
            freeze_backbone=True, feature_passes=1, val_fraction=0.25,
        )  # fmt: skip
        runs.append(train(config).best_path)
    return {"root": root, "data": data, "runs": runs}


def invoke(argv: list[str]):
    result = runner.invoke(app, [str(a) for a in argv], env=WIDE)
    assert "Traceback" not in result.output
    return result


# ----------------------------------------------------------------------------- evaluate


def test_cli_evaluate_as_typed(world):
    Path("data").mkdir()
    Path("data/synthetic.h5").symlink_to(world["data"])
    run_dir = world["runs"][0].parent
    result = invoke(["evaluate", run_dir / "best.pt", "--task", "sv-object-retrieval", "--no-save"])
    assert result.exit_code == 0, result.output
    assert "SV obj mAP" in result.output and "SV cat acc" not in result.output
    result = invoke(["evaluate", run_dir])  # a run folder means its best.pt; saves into it
    assert result.exit_code == 0, result.output
    for short in ("SV cat acc", "MV cat acc", "SV obj acc", "MV obj acc", "SV cat mAP", "MV obj mAP", "mean"):
        assert short in result.output
    saved = json.loads((run_dir / "eval_test.json").read_text())
    assert saved["protocol"] == "default" and list(saved["runs"][0]["tasks"]) == list(TASKS)
    assert saved["tie_break"] == "smallest" and saved["runs"][0]["tie_break"] == "smallest"
    assert (run_dir / "eval_test.csv").read_text().startswith("source," + ",".join(TASKS))


def test_library_matches_the_tasks_on_the_same_embeddings(world):
    ckpt_path = world["runs"][0]
    result = evaluate([ckpt_path], data=world["data"], save=False)
    ckpt = load_checkpoint(ckpt_path)
    model = load_model(ckpt, torch.device("cpu"))
    store = ViewSetStore(world["data"])
    gallery = embed_objects(model, store, "train", None, torch.device("cpu")).embeddings
    probes = embed_objects(model, store, "test", None, torch.device("cpu")).embeddings
    assert result.runs[0].values == evaluate_picr(gallery, probes, device="cpu")
    assert result.runs[0].num_queries["sv-category-recognition"] == len(store.split("test")) * store.num_views
    strict = evaluate([ckpt_path], data=world["data"], strict=True, save=False).runs[0].values
    assert strict == evaluate_picr(gallery, probes, strict=True, device="cpu")
    for value in strict.values():
        assert 0.0 <= value <= 100.0


def test_tie_break_option(world):
    ckpt_path = world["runs"][0]
    result = evaluate([ckpt_path], data=world["data"], tie_break="nearest", save=False)
    ckpt = load_checkpoint(ckpt_path)
    model = load_model(ckpt, torch.device("cpu"))
    store = ViewSetStore(world["data"])
    gallery = embed_objects(model, store, "train", None, torch.device("cpu")).embeddings
    probes = embed_objects(model, store, "test", None, torch.device("cpu")).embeddings
    assert result.runs[0].values == evaluate_picr(gallery, probes, tie_break="nearest", device="cpu")
    assert result.to_dict()["tie_break"] == "nearest" and result.to_dict()["protocol"] == "default"
    cli = invoke(["evaluate", ckpt_path, "--data", world["data"], "--tie-break", "nearest"])
    assert cli.exit_code == 0, cli.output
    assert "vote ties to the nearest" in " ".join(cli.output.split())
    saved_path = ckpt_path.parent / "eval_test_nearest.json"
    saved = json.loads(saved_path.read_text())
    assert saved["tie_break"] == "nearest" and saved["runs"][0]["tie_break"] == "nearest"
    subset = invoke(["evaluate", ckpt_path, "--data", world["data"], "--tie-break", "nearest", "-t", "mv-category-recognition"])
    assert subset.exit_code == 0 and json.loads(saved_path.read_text()) == saved  # one task never replaces the eight
    bad = invoke(["evaluate", ckpt_path, "--data", world["data"], "--tie-break", "largest", "--no-save"])
    assert bad.exit_code == 1 and "--tie-break 'largest'" in bad.output
    assert "renumbering" in invoke(["evaluate", "--help"]).output


def test_several_checkpoints_give_mean_and_std(world):
    result = evaluate(world["runs"], data=world["data"], tasks="sv-category-retrieval,mv-object-recognition", save=False)
    assert result.tasks == ("mv-object-recognition", "sv-category-retrieval")
    for task in result.tasks:
        values = [run.values[task] for run in result.runs]
        assert result.mean[task] == pytest.approx(np.mean(values))
        assert result.std[task] == pytest.approx(np.std(values, ddof=1))
    cli = invoke(["evaluate", *world["runs"], "--data", world["data"], "-t", "mv-object-recognition", "-t", "sv-category-retrieval",
                  "--format", "csv", "--no-save"])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    rows = list(csv.reader(io.StringIO(cli.stdout)))
    assert rows[0] == ["source", "mv-object-recognition", "sv-category-retrieval", "mean"]
    assert [r[0] for r in rows[1:]] == [str(p) for p in world["runs"]] + ["mean", "std"]
    cli = invoke(["evaluate", *world["runs"], "--data", world["data"], "--format", "json", "--no-save", "--out", "table1.json"])
    assert cli.exit_code == 0, cli.output
    printed = json.loads(cli.stdout)
    assert set(printed["std"]) == {*TASKS, "mean"} and json.loads(Path("table1.json").read_text()) == printed
    table = invoke(["evaluate", *world["runs"], "--data", world["data"], "--no-save"])
    assert "mean of 2" in table.output and "std" in table.output


def test_embeddings_file_in_place_of_a_checkpoint(world):
    ckpt_path = world["runs"][0]
    result = invoke(["embed", ckpt_path, "--data", world["data"], "--split", "train,test", "--out", "emb.h5"])
    assert result.exit_code == 0, result.output
    assert "wrote emb.h5" in result.output
    with h5py.File("emb.h5") as f:
        assert f.attrs["format"] == "piro-embeddings" and f.attrs["checkpoint_epoch"] == 1
        assert f["test/sv_cat"].shape[1:] == (12, 16) and f["test/mv_obj_first"].shape[1:] == (16,)
        assert f["test/sv_cat"].dtype == np.float32 and f["train"].attrs["source_split"] == "train"
        names = [s.decode() for s in f["test/object_name"][:]]
    store = ViewSetStore(world["data"])
    assert names == store.split("test").object_names
    from_ckpt = evaluate([ckpt_path], data=world["data"], save=False).runs[0].values
    from_file = evaluate(["emb.h5"], save=True).runs[0]
    assert from_file.values == from_ckpt
    assert Path("emb.eval_test.json").exists()
    again = invoke(["embed", ckpt_path, "--data", world["data"], "--out", "emb.h5"])
    assert again.exit_code == 1 and "--overwrite" in again.output
    only_test = embed(ckpt_path, data=world["data"], out="test-only.h5")
    assert only_test.groups == {"test": len(store.split("test"))}
    assert set(evaluate(["test-only.h5"], tasks="mv-object-retrieval", save=False).runs[0].values) == {"mv-object-retrieval"}
    with pytest.raises(DataError, match="no 'train' embeddings.*--split train,test"):
        evaluate(["test-only.h5"], save=False)


def test_split_val_uses_the_objects_the_run_carved_out(world):
    ckpt_path = world["runs"][1]
    ckpt = load_checkpoint(ckpt_path)
    val_rows = ckpt["data"]["val"]["indices"]
    result = evaluate([ckpt_path], data=world["data"], split="val", save=True)
    run = result.runs[0]
    assert run.num_queries["mv-category-retrieval"] == len(val_rows)
    assert (ckpt_path.parent / "eval_val.json").exists()
    store = ViewSetStore(world["data"])
    model = load_model(ckpt, torch.device("cpu"))
    gallery = embed_objects(model, store, "train", ckpt["data"]["train_indices"], torch.device("cpu")).embeddings
    probes = embed_objects(model, store, "train", val_rows, torch.device("cpu")).embeddings
    assert run.values == evaluate_picr(gallery, probes, device="cpu")
    embed(ckpt_path, data=world["data"], splits="train,val", out="val.h5")
    file = EmbeddingsFile("val.h5")
    assert file.source_split("val") == "train" and file.object_index("val").tolist() == val_rows
    assert evaluate(["val.h5"], split="val", save=False).runs[0].values == run.values
    cli = invoke(
        ["evaluate", ckpt_path, "--data", world["data"], "--split", "val", "--task", "mv-category-recognition", "--no-save"]
    )
    assert cli.exit_code == 0, cli.output


# ----------------------------------------------------------------------------- bad input


def test_not_a_checkpoint(world):
    Path("junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"state_dict": {}}, "other.pt")
    for path, message in (
        ("junk.pt", "not a PyTorch file"),
        ("other.pt", "not a piro checkpoint"),
        ("nope.pt", "no such checkpoint"),
    ):
        result = invoke(["evaluate", path, "--data", world["data"]])
        assert result.exit_code == 1 and message in result.output and path in result.output, result.output
    result = invoke(["embed", "junk.pt", "--data", world["data"]])
    assert result.exit_code == 1 and "not a PyTorch file" in result.output


def test_category_mismatch(world):
    other = synthetic(Path("other.h5"), seed=1, categories=4, objects=3)
    for argv in (["evaluate", world["runs"][0], "--data", other], ["embed", world["runs"][0], "--data", other]):
        result = invoke(argv)
        assert result.exit_code == 1, result.output
        assert "trained on 3 categories" in result.output and "other.h5 holds 4" in result.output


def test_missing_split(world):
    store = ViewSetStore(world["data"])
    train = store.split("train")
    with StoreWriter("train-only.h5", categories=store.categories, num_views=store.num_views, image_size=store.image_size,
                     source_dataset="synthetic", creation_options={}) as writer:  # fmt: skip
        for i in range(4):
            writer.append("train", train.views_uint8(i), int(train.category[i]), train.object_names[i], "x")
        writer.commit()
    result = invoke(["evaluate", world["runs"][0], "--data", "train-only.h5"])
    assert result.exit_code == 1 and "train-only.h5: has no 'test' split" in result.output, result.output
    result = invoke(["embed", world["runs"][0], "--data", "train-only.h5", "--split", "test"])
    assert result.exit_code == 1 and "has no 'test' split" in result.output
    result = invoke(["evaluate", world["runs"][0], "--data", "train-only.h5", "--split", "val"])
    assert result.exit_code == 1 and "is not the dataset run" in result.output  # val rows are recorded for the original file


def test_split_val_without_validation_objects(world, tmp_path):
    config = TrainConfig(data=str(world["data"]), project=str(tmp_path / "runs"), backbone="tiny", pretrained=False, cat_dim=8,
                         obj_dim=8, epochs=1, pairs_per_object=1, device="cpu", early_stop_rho=0.0, freeze_backbone=True,
                         feature_passes=1)  # fmt: skip
    ckpt = train(config).best_path
    with pytest.raises(DataError, match="no validation objects.*--val-fraction"):
        evaluate([ckpt], data=world["data"], split="val", save=False)
    with pytest.raises(PiroError, match="unknown task 'nope'"):
        evaluate([ckpt], tasks="nope", save=False)
    result = invoke(["evaluate", ckpt, "--format", "yaml"])
    assert result.exit_code == 1 and "--format" in result.output


# ----------------------------------------------------------------------------- a new object's photos


def test_embed_photos_of_a_new_object(world):
    views = ViewSetStore(world["data"]).split("test").views_uint8(0)
    photos = []
    for k, view in enumerate(views[:4]):
        Image.fromarray(view).resize((48, 48)).save(f"photo{k}.png")  # another size: resized like `piro prepare`
        photos.append(f"photo{k}.png")
    ckpt = world["runs"][0]
    result = invoke(["embed", ckpt, "--images", *photos])
    assert result.exit_code == 0, result.output
    assert "4 photos" in result.output and "mv_cat (16,)" in result.output
    result = invoke(["embed", ckpt, "--images", *photos, "--data", world["data"], "--top", "3", "--out", "new.json"])
    assert result.exit_code == 0, result.output
    assert "nearest categories" in result.output and "nearest gallery objects" in result.output
    written = json.loads(Path("new.json").read_text())
    assert len(written["sv_cat"]) == 4 and len(written["mv_obj"]) == 16 and len(written["nearest_objects"]) == 3
    assert written["nearest_categories"][0]["category"] in ViewSetStore(world["data"]).categories
    embed(ckpt, data=world["data"], splits="train", out="gallery.h5")
    from_file = invoke(["embed", ckpt, "--images", *photos, "--data", "gallery.h5", "--top", "3", "--out", "new2.json"])
    assert from_file.exit_code == 0, from_file.output
    assert json.loads(Path("new2.json").read_text())["nearest_objects"] == written["nearest_objects"]
    missing = invoke(["embed", ckpt, "--images", "photo0.png", "gone.jpg"])
    assert missing.exit_code == 1 and "gone.jpg: no such image file" in missing.output
    loose = invoke(["embed", ckpt, "photo0.png"])
    assert loose.exit_code == 1 and "--images" in loose.output


def test_precision_is_the_runs_own_recorded_and_overridable(world):
    ckpt_path = world["runs"][0]
    assert load_checkpoint(ckpt_path)["train_config"]["precision"] == "auto"  # no recipe: mixed on a GPU, fp32 here
    default = evaluate([ckpt_path], data=world["data"], save=False)
    assert default.runs[0].precision == "fp32"
    bf16 = evaluate([ckpt_path], data=world["data"], save=False, embedding=EmbedSettings(precision="bf16"))
    assert bf16.runs[0].precision == "bf16"
    # a bf16 backbone rounds its features: the same model embeds differently (hand check: the embeddings, not the tasks)
    model = load_model(load_checkpoint(ckpt_path), torch.device("cpu"))
    store = ViewSetStore(world["data"])
    fp32 = embed_objects(model, store, "test", None, torch.device("cpu")).embeddings
    model.precision = "bf16"
    rounded = embed_objects(model, store, "test", None, torch.device("cpu")).embeddings
    gap = np.abs(fp32.sv_obj - rounded.sv_obj).max()
    assert 0 < gap < 0.1
    run_dir = ckpt_path.parent
    before = (run_dir / "eval_test.json").stat().st_mtime_ns if (run_dir / "eval_test.json").exists() else None
    result = invoke(["evaluate", ckpt_path, "--data", world["data"], "--precision", "BF16", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["precision"] == "bf16"
    after = (run_dir / "eval_test.json").stat().st_mtime_ns if (run_dir / "eval_test.json").exists() else None
    assert after == before  # another arithmetic than the run's never replaces its saved results
    result = invoke(["evaluate", ckpt_path, "--data", world["data"], "--precision", "fp8"])
    assert result.exit_code != 0 and "--precision 'fp8': choose one of auto, fp32, bf16, fp16" in result.output
