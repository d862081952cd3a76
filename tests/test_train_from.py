"""Partial fine-tuning from cached activations at a backbone cut (`piro train --train-from STAGE`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.errors import PiroError
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.inference.run import EmbedSettings
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.runs import load_checkpoint
from piro_cli.training import train

runner = CliRunner()
TINY_CLI = "--backbone tiny --no-pretrained --embed-dim 16 --epochs 1 --freeze-backbone --feature-passes 1".split()
ONE_STEP = dict(epochs=1, pairs_per_object=1, batch_pairs=64, augment=False, feature_passes=1)  # the whole epoch: one step


def test_a_cut_run_and_a_full_run_agree_on_the_first_step(tiny_data):
    """From the same seed (the same initial weights and pairs), the loss of the first step through cached float16
    activations at body.6 equals the loss of full fine-tuning, which runs every image through the whole backbone."""
    full = train(tiny_config(tiny_data, name="full", **ONE_STEP))
    cut = train(tiny_config(tiny_data, name="cut", train_from="body.6", **ONE_STEP))
    full_loss, cut_loss = float(full.history[0]["loss"]), float(cut.history[0]["loss"])
    assert cut_loss == pytest.approx(full_loss, rel=5e-4)  # float16 activations: 6e-5 apart here
    frozen = train(tiny_config(tiny_data, name="frozen", freeze_backbone=True, **ONE_STEP))
    assert float(frozen.history[0]["loss"]) == pytest.approx(full_loss, rel=1e-5)  # the same first step, heads only


def test_a_cut_run_trains_only_above_the_cut_and_writes_the_usual_checkpoint(tiny_data):
    result = train(tiny_config(tiny_data, name="cut", train_from="body.6", epochs=2, lr=1e-2))
    checkpoint = load_checkpoint(result.best_path)
    assert checkpoint["model_config"] == PANConfig(backbone="tiny", pretrained=False, cat_dim=16, obj_dim=16).to_dict()
    torch.manual_seed(0)  # what train() seeds before building the model: the initial weights
    initial = PAN(PANConfig(**checkpoint["model_config"])).state_dict()
    trained = checkpoint["model_state"]
    assert set(trained) == set(initial)  # the same model, no extra keys for the cut
    for name, tensor in trained.items():
        if not name.startswith("backbone."):
            continue
        layer = int(name.split(".")[2])  # backbone.body.<layer>.weight
        if layer < 6:
            assert torch.equal(tensor, initial[name]), name  # below the cut: untouched
        elif tensor.is_floating_point() and name.endswith("weight"):
            assert not torch.equal(tensor, initial[name]), name  # from body.6 on: trained
    report = evaluate([result.best_path], data=tiny_data, split="test", save=False)  # runs the whole backbone
    assert all(0 <= v <= 100 for v in report.mean.values())


def test_the_cut_cache_is_its_own_and_is_reused(tiny_data, tmp_path):
    train(tiny_config(tiny_data, name="frozen", freeze_backbone=True, epochs=1))
    train(tiny_config(tiny_data, name="cut-a", train_from="body.9", epochs=1))
    caches = sorted((tmp_path / "runs" / "feature-cache").glob("*.pt"))
    assert len(caches) == 2  # the frozen features and the activations at body.9
    activations = [torch.load(p, weights_only=True) for p in caches]
    cut_cache = next(c for c in activations if c["key"].get("train_from") == "body.9")
    assert cut_cache["train"].dtype == torch.float16 and cut_cache["train"].dim() == 6  # (K, N, V, C, h, w)
    stamps = {p: p.stat().st_mtime_ns for p in caches}
    train(tiny_config(tiny_data, name="cut-b", train_from="body.9", epochs=1, seed=1))
    assert {p: p.stat().st_mtime_ns for p in caches} == stamps  # reused, not rebuilt


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(train_from="body.6", freeze_backbone=True), "pass one of them"),
        (dict(train_from="layer4"), "can start training at body.3, body.6, body.9"),
        (dict(train_from="layer4", backbone="timm:resnet10t"), "can start training at nowhere"),
    ],
)
def test_bad_train_from_is_refused(tiny_data, overrides, message):
    with pytest.raises(PiroError, match=message):
        tiny_config(tiny_data, **overrides)


def test_cli_train_from(tiny_data):
    done = runner.invoke(app, ["train", "--data", str(tiny_data), "--backbone", "tiny", "--no-pretrained", "--embed-dim", "16",
                               "--epochs", "1", "--pairs-per-object", "1", "--train-from", "body.9", "--device", "cpu"])  # fmt: skip
    assert done.exit_code == 0, done.output
    refused = runner.invoke(app, ["train", "--data", str(tiny_data), "--backbone", "tiny", "--train-from", "blocks.6"])
    assert refused.exit_code == 1 and "--train-from blocks.6" in refused.output and "Traceback" not in refused.output


def test_tta_averages_each_view_with_its_mirror(tiny_data):
    """--tta: a view's single-view embedding is L2norm of the mean of the unnormalised embeddings of the view and of
    its horizontal mirror, computed here by hand from the heads; MV embeddings use the same averaged views."""
    from piro_cli.data.store import ViewSetStore
    from piro_cli.inference.run import load_model

    result = train(tiny_config(tiny_data, name="t", epochs=1))
    checkpoint = load_checkpoint(result.best_path)
    plain, flipped = load_model(checkpoint, torch.device("cpu")), load_model(checkpoint, torch.device("cpu"), tta=True)
    views = ViewSetStore(tiny_data).split("test").batch([0])  # (1, V, 3, S, S)
    with torch.no_grad():
        mirror = views.flip(-1)
        by_hand = (plain.obj_head(plain.features(views)) + plain.obj_head(plain.features(mirror))) / 2
        out = flipped(views)
    torch.testing.assert_close(out.sv_obj, torch.nn.functional.normalize(by_hand, dim=-1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.sv_obj, plain(views).sv_obj)  # the mirror changed something
    report = evaluate([result.best_path], data=tiny_data, split="test", embedding=EmbedSettings(tta=True), save=True)
    saved = json.loads((result.run_dir / "eval_test_tta.json").read_text())  # beside the plain eval_test.json
    assert saved["tta"] is True and report.to_dict()["tta"] is True


def test_a_runs_tta_setting_is_the_default_of_evaluate_and_embed(tiny_data):
    """`piro train --tta` (or a recipe's) makes test-time flips the run's default: evaluate and embed use them unless
    told --no-tta, and the saved results say which; runs without the setting evaluate plain."""
    import h5py

    flipped_run = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--tta", "--name", "flips"])
    assert flipped_run.exit_code == 0, flipped_run.output
    assert json.loads((Path("runs/flips/config.json")).read_text())["train"]["tta"] is True
    result = runner.invoke(app, ["evaluate", "runs/flips/best.pt", "--data", str(tiny_data), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert Path("runs/flips/eval_test_tta.json").is_file() and not Path("runs/flips/eval_test.json").exists()
    by_default = json.loads(Path("runs/flips/eval_test_tta.json").read_text())
    explicit = evaluate(["runs/flips/best.pt"], data=tiny_data, split="test", embedding=EmbedSettings(tta=True), save=False).to_dict()
    assert by_default["tta"] is True and by_default["mean"] == explicit["mean"]  # the same numbers as --tta
    plain = runner.invoke(app, ["evaluate", "runs/flips/best.pt", "--data", str(tiny_data), "--no-tta"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(Path("runs/flips/eval_test.json").read_text())["tta"] is False
    embedded = runner.invoke(app, ["embed", "runs/flips/best.pt", "--data", str(tiny_data), "--out", "e.h5"])
    assert embedded.exit_code == 0, embedded.output
    with h5py.File("e.h5") as handle:
        assert bool(handle.attrs["tta"]) is True

    default_run = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY_CLI, "--name", "plain"])
    assert default_run.exit_code == 0, default_run.output
    assert evaluate(["runs/plain/best.pt"], data=tiny_data, split="test", save=False).to_dict()["tta"] is False


def test_object_features_frozen_trains_two_paths(tiny_data):
    """--object-features frozen: the object head reads a frozen copy of the layers above the cut, as they were
    before training (checked against a fresh model of the same seed), while the category head reads the trained
    layers; embeddings by hand from the two paths; evaluate takes the run as any other."""
    from piro_cli.inference.run import load_model

    result = train(tiny_config(tiny_data, name="two", train_from="body.6", object_features="frozen", epochs=1, lr=1e-2))
    checkpoint = load_checkpoint(result.best_path)
    assert checkpoint["model_config"]["object_trunk"] == "body.6"
    model = load_model(checkpoint, torch.device("cpu"))
    torch.manual_seed(0)  # what train() seeds before building the model: the initial weights
    initial = PAN(PANConfig(backbone="tiny", pretrained=False, cat_dim=16, obj_dim=16))
    above = dict(initial.cut("body.6").above.named_parameters())
    for name, frozen in model.object_trunk.named_parameters():
        torch.testing.assert_close(frozen, above[name])  # never trained
    trained = dict(model.cut("body.6").above.named_parameters())
    assert any(not torch.equal(trained[name], above[name]) for name in above)  # the category path did train
    views = __import__("piro_cli.data.store", fromlist=["ViewSetStore"]).ViewSetStore(tiny_data).split("test").batch([0])
    with torch.no_grad():
        images = views.flatten(0, 1)
        acts = model.backbone.body[:6](images)
        by_hand_obj = torch.nn.functional.normalize(model.obj_head(initial.backbone.pool(initial.backbone.body[6:](acts)).flatten(1)), dim=-1)
        by_hand_cat = torch.nn.functional.normalize(model.cat_head(model.backbone(images)), dim=-1)
        out = model(views)
    torch.testing.assert_close(out.sv_obj[0], by_hand_obj, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.sv_cat[0], by_hand_cat, rtol=1e-4, atol=1e-5)
    report = evaluate([result.best_path], data=tiny_data, split="test", save=False)
    assert set(report.runs[0].values) and all(v == v for v in report.runs[0].values.values())
    from piro_cli.training.config import method_label

    recorded = json.loads((result.run_dir / "config.json").read_text())["train"]
    assert method_label(recorded) == "piro-dual+obj-features=frozen"  # compare groups it apart from piro-dual
    with pytest.raises(PiroError, match="object_features frozen reads frozen layers from the train_from stage"):
        train(tiny_config(tiny_data, name="no-cut", object_features="frozen", freeze_backbone=False, epochs=1))
    with pytest.raises(PiroError, match="piro-dual"):
        tiny_config(tiny_data, name="single", method="piro-single", object_features="frozen", train_from="body.6")
