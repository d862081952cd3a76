"""Test-time scales (`--tta-scales`): each view embedded as the mean over it resized by the given factors.

Expected embeddings are computed by hand here: torch's own `F.interpolate` at the sizes the factors give, the
backbone and the heads called directly, not through PAN.features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from PIL import Image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import PiroError
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.inference.run import EmbedSettings, load_model, load_run
from piro_cli.options import check_test_scales
from piro_cli.runs import load_checkpoint
from piro_cli.training import train

runner = CliRunner()
TINY_CLI = "--backbone tiny --no-pretrained --embed-dim 16 --epochs 1 --freeze-backbone --feature-passes 1".split()


@pytest.fixture(scope="module")
def scaled_run(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("scales")
    result = train(tiny_config(tiny_data, name="s", epochs=1, project=str(root / "runs")))
    return result.best_path


def by_hand(model, views: torch.Tensor, sizes: list[int], flips: bool) -> torch.Tensor:
    """L2norm of the object head over the mean of the backbone features at each size (and its mirror)."""
    images = views.flatten(0, 1)
    total = 0
    for size in sizes:
        resized = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False) if size != images.shape[-1] else images
        feats = model.backbone(resized)
        if flips:
            feats = (feats + model.backbone(resized.flip(-1))) / 2
        total = total + feats
    feats = (total / len(sizes)).reshape(*views.shape[:2], -1)
    return F.normalize(model.obj_head(feats), dim=-1)


def test_scales_average_the_features_of_each_resized_view(scaled_run, tiny_data):
    checkpoint = load_checkpoint(scaled_run)
    views = ViewSetStore(tiny_data).split("test").batch([0, 1])  # (2, V, 3, 32, 32)
    side = views.shape[-1]
    plain = load_model(checkpoint, torch.device("cpu"))
    for scales, flips in (((1.0, 1.5), False), ((1.5,), False), ((0.75, 1.0, 1.25), True)):
        model = load_model(checkpoint, torch.device("cpu"), tta=flips, tta_scales=scales)
        with torch.no_grad():
            expected = by_hand(plain, views, [round(side * s) for s in scales], flips)
            out = model(views)
        torch.testing.assert_close(out.sv_obj, expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(out.sv_obj, plain(views).sv_obj)
    with torch.no_grad():  # training never scales: the model's train mode reads the views as they are
        model.train()
        torch.testing.assert_close(model.features(views), plain.features(views))


@pytest.mark.parametrize(
    "value, message",
    [("0", "[0.5, 2]"), ("3", "[0.5, 2]"), ("nan", "[0.5, 2]"), ("1,1", "repeated"), ("1,1.1,1.2,1.3,1.4", "1 to 4"),
     ("one", "not a list of numbers"), (",", "1 to 4")],
)  # fmt: skip
def test_bad_scales_are_one_line(scaled_run, tiny_data, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_test_scales(value)
    result = runner.invoke(app, ["evaluate", str(scaled_run), "--data", str(tiny_data), "--tta-scales", value])
    assert result.exit_code == 1 and f"--tta-scales {value}" in result.output and "Traceback" not in result.output
    trained = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--tta-scales", value])
    assert trained.exit_code == 1 and "--tta-scales" in trained.output and not Path("runs").exists()


def test_evaluate_with_scales_records_them_and_never_reuses_other_embeddings(scaled_run, tiny_data):
    plain = evaluate([scaled_run], data=tiny_data, split="test", save=False)
    scaled = evaluate([scaled_run], data=tiny_data, split="test", save=False, embedding=EmbedSettings(tta_scales=(1.0, 1.5)))
    assert plain.to_dict()["runs"][0]["tta_scales"] == [1.0] and scaled.to_dict()["runs"][0]["tta_scales"] == [1.0, 1.5]
    assert plain.runs[0].values != scaled.runs[0].values  # other embeddings, not the cached plain ones
    again = evaluate([scaled_run], data=tiny_data, split="test", save=False, embedding=EmbedSettings(tta_scales=(1.0, 1.5)))
    assert again.runs[0].values == scaled.runs[0].values  # now from the cache, under its own key
    before = sorted(p.name for p in scaled_run.parent.glob("eval_*"))
    result = runner.invoke(app, ["evaluate", str(scaled_run), "--data", str(tiny_data), "--tta-scales", "1,1.5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in scaled_run.parent.glob("eval_*")) == before  # an override is never saved in the run


def test_a_runs_scales_travel_to_evaluate_index_identify_and_export(tiny_data):
    """`piro train --tta-scales` is the run's default: config.json, evaluate, the index's record, identify's answers
    (equal to the model's own embedding of the photo at those scales) and the exported graphs all carry it."""
    done = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--tta-scales", "1,1.25", "--name", "sc"])
    assert done.exit_code == 0, done.output
    assert json.loads(Path("runs/sc/config.json").read_text())["train"]["tta_scales"] == [1.0, 1.25]
    loaded = load_run("runs/sc", "cpu")
    assert loaded.tta_scales == (1.0, 1.25)
    by_default = evaluate(["runs/sc"], data=tiny_data, split="test", save=False)
    explicit = evaluate(["runs/sc"], data=tiny_data, split="test", save=False, embedding=EmbedSettings(tta_scales=(1.0, 1.25)))
    assert by_default.runs[0].values == explicit.runs[0].values and by_default.runs[0].tta_scales == [1.0, 1.25]
    built = runner.invoke(app, ["index", "build", "runs/sc", "--data", str(tiny_data), "--out", "sc.piro-index"])
    assert built.exit_code == 0, built.output
    manifest = json.loads(Path("sc.piro-index/index.json").read_text())
    assert manifest["checkpoint"]["tta_scales"] == [1.0, 1.25]
    store = ViewSetStore(tiny_data)
    photo = store.split("test").views_uint8(0)[0]
    Image.fromarray(photo).save("p.png")
    answer = runner.invoke(app, ["identify", "sc.piro-index", "p.png", "--format", "json", "--top", "1"])
    assert answer.exit_code == 0, answer.output
    from piro_cli.inference.embedding import embed_photos
    from piro_cli.inference.index import GalleryIndex

    model_of_index = GalleryIndex("sc.piro-index").load_run()
    sv_obj = embed_photos(model_of_index.model, [Path("p.png")], model_of_index.image_size, model_of_index.device).sv_obj
    with torch.no_grad():
        expected = by_hand(load_model(load_checkpoint("runs/sc/best.pt"), torch.device("cpu")),
                           torch.as_tensor(_normalised(photo))[None, None], [photo.shape[0], round(photo.shape[0] * 1.25)], False)  # fmt: skip
    np.testing.assert_allclose(sv_obj[0].numpy(), expected[0, 0].numpy(), rtol=1e-4, atol=1e-5)
    pytest.importorskip("onnxruntime")
    assert runner.invoke(app, ["export", "runs/sc", "--onnx", "m.onnx"]).exit_code == 0
    assert json.loads(Path("m.json").read_text())["tta_scales"] == [1.0, 1.25]
    same = runner.invoke(app, ["identify", "sc.piro-index", "p.png", "--onnx", "m.onnx", "--format", "json", "--top", "1"])
    assert same.exit_code == 0 and json.loads(same.output)["answer"] == json.loads(answer.output)["answer"]
    # graphs exported at other scales than the index's are refused, in one line
    record = json.loads(Path("m.json").read_text())
    Path("m.json").write_text(json.dumps({**record, "tta_scales": [1.0]}))
    refused = runner.invoke(app, ["identify", "sc.piro-index", "p.png", "--onnx", "m.onnx"])
    assert refused.exit_code == 1 and "test-time scales" in refused.output and "Traceback" not in refused.output


def _normalised(photo: np.ndarray) -> np.ndarray:
    """One uint8 (S, S, 3) photo as the ImageNet-normalised (3, S, S) float32 the models read."""
    from piro_cli.data.store import normalize_views

    return normalize_views(photo[None]).numpy()[0]


def test_a_config_file_may_set_scales_as_a_list_or_text(tiny_data):
    Path("c.yaml").write_text("tta_scales: [1, 1.25]\n")
    Path("bad.yaml").write_text("tta_scales: [true]\n")
    done = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--config", "c.yaml", "--name", "a"])
    assert done.exit_code == 0, done.output
    assert json.loads(Path("runs/a/config.json").read_text())["train"]["tta_scales"] == [1.0, 1.25]
    refused = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--config", "bad.yaml"])
    assert refused.exit_code == 1 and "tta-scales" in refused.output and "Traceback" not in refused.output
    with pytest.raises(PiroError, match="tta_scales"):
        tiny_config(tiny_data, tta_scales=(0.1,))


def test_index_build_may_choose_other_scales_than_the_runs(tiny_data):
    """`piro index build --tta-scales 1` on a run with 1,1.25: the index records 1 and its photos are embedded at 1
    (the cheaper identify), by build, add and identify alike."""
    assert runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--tta-scales", "1,1.25", "--name", "sc"]).exit_code == 0
    built = runner.invoke(app, ["index", "build", "runs/sc", "--data", str(tiny_data), "--out", "one.piro-index", "--tta-scales", "1"])
    assert built.exit_code == 0, built.output
    assert json.loads(Path("one.piro-index/index.json").read_text())["checkpoint"]["tta_scales"] == [1.0]
    from piro_cli.inference.index import GalleryIndex

    assert GalleryIndex("one.piro-index").load_run().tta_scales == (1.0,)
    both = runner.invoke(app, ["index", "build", "runs/sc", "--data", str(tiny_data), "--out", "both.piro-index"])
    assert both.exit_code == 0, both.output
    shown = runner.invoke(app, ["index", "info", "both.piro-index"], env={"COLUMNS": "200"})
    assert "test-time scales 1,1.25" in shown.output
    assert "test-time scales" not in runner.invoke(app, ["index", "info", "one.piro-index"], env={"COLUMNS": "200"}).output
    refused = runner.invoke(app, ["index", "build", "runs/sc", "--data", str(tiny_data), "--out", "x.piro-index", "--tta-scales", "9"])
    assert refused.exit_code == 1 and "--tta-scales 9" in refused.output and not Path("x.piro-index").exists()


def test_export_may_follow_an_index_built_with_other_scales(tiny_data):
    """An index built with `--tta-scales 1` from a run of 1,1.25 needs graphs embedding at 1: `piro export
    --tta-scales 1` writes them, identify uses them and answers as the index's own torch model does."""
    pytest.importorskip("onnxruntime")
    assert runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--tta-scales", "1,1.25", "--name", "sc"]).exit_code == 0
    assert runner.invoke(app, ["index", "build", "runs/sc", "--data", str(tiny_data), "--out", "one.piro-index", "--tta-scales", "1"]).exit_code == 0
    Image.fromarray(ViewSetStore(tiny_data).split("test").views_uint8(1)[0]).save("p.png")
    assert runner.invoke(app, ["export", "runs/sc", "--onnx", "run.onnx"]).exit_code == 0  # the run's own: 1,1.25
    refused = runner.invoke(app, ["identify", "one.piro-index", "p.png", "--onnx", "run.onnx"])
    assert refused.exit_code == 1 and "test-time scales" in refused.output
    done = runner.invoke(app, ["export", "runs/sc", "--onnx", "one.onnx", "--tta-scales", "1"])
    assert done.exit_code == 0, done.output
    assert json.loads(Path("one.json").read_text())["tta_scales"] == [1.0]
    by_graphs = runner.invoke(app, ["identify", "one.piro-index", "p.png", "--onnx", "one.onnx", "--format", "json"])
    by_model = runner.invoke(app, ["identify", "one.piro-index", "p.png", "--format", "json"])
    assert by_graphs.exit_code == 0 and by_model.exit_code == 0, by_graphs.output + by_model.output
    graphs, model = json.loads(by_graphs.output), json.loads(by_model.output)
    assert graphs["answer"] == model["answer"] and graphs["score"] == pytest.approx(model["score"], abs=1e-4)


def test_damaged_or_impossible_scales_are_one_line(scaled_run, tiny_data):
    """A manifest whose scales no run could have, a views curve asked for other scales, a backbone of one input size:
    one line each, never a traceback; a run's config.json from before the option trains again at scale 1."""
    assert runner.invoke(app, ["index", "build", str(scaled_run), "--data", str(tiny_data), "--out", "d.piro-index"]).exit_code == 0
    manifest = json.loads(Path("d.piro-index/index.json").read_text())
    for bad in ([5], [1, 1], [], ["x"]):
        Path("d.piro-index/index.json").write_text(json.dumps({**manifest, "checkpoint": {**manifest["checkpoint"], "tta_scales": bad}}))
        result = runner.invoke(app, ["index", "info", "d.piro-index"])
        assert result.exit_code == 1 and "checkpoint.tta_scales" in result.output and "Traceback" not in result.output
    curve = runner.invoke(app, ["evaluate", str(scaled_run), "--data", str(tiny_data), "--views-curve", "--tta-scales", "1,1.5"])
    assert curve.exit_code == 1 and "--views-curve" in curve.output
    from piro_cli.models.pan import PAN, PANConfig

    vit = PAN(PANConfig(backbone="timm:vit_tiny_patch16_224", pretrained=False, cat_dim=8, obj_dim=8))
    checkpoint = {"path": "vit.pt", "model_config": vit.config.to_dict(), "model_state": vit.state_dict()}
    assert load_model(checkpoint, torch.device("cpu")).test_scales == (1.0,)
    with pytest.raises(PiroError, match="one input size only"):
        load_model(checkpoint, torch.device("cpu"), tta_scales=(1.0, 1.15))
    from piro_cli.training.config_file import read_config_file

    old = json.loads((scaled_run.parent / "config.json").read_text())
    old["train"].pop("tta_scales", None)
    Path("old.json").write_text(json.dumps(old))
    assert read_config_file("old.json")["tta_scales"] == [1.0]  # not the recipe's, which the old run never had


def test_a_bad_value_typed_is_not_blamed_on_the_config_file(tiny_data):
    Path("c.yaml").write_text("epochs: 1\n")
    result = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--config", "c.yaml", "--losses", "bogus"])
    assert result.exit_code == 1 and "error: --losses" in result.output and "c.yaml" not in result.output
    Path("c.yaml").write_text("losses: bogus\n")
    result = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--config", "c.yaml"])
    assert result.exit_code == 1 and "--config c.yaml: losses" in result.output
