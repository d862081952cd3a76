"""`--recipe`: the released per-dataset values, chosen from the data's source, overridden by explicit options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from conftest import tiny_config
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.cli.common import error_message
from piro_cli.errors import PiroError
from piro_cli.recipes import BUILTIN_DEFAULTS, RECIPES, Recipe
from piro_cli.training import TrainConfig

runner = CliRunner()

# ConfigLearn.py of the released code: HyperParams (batchSize, lamda, embDim, margins, ecc_ratio) and
# ConfigOOWL / ConfigMNet40 / ConfigFG3D (N_G = min(len(gal_vp), N_G_B), Ncomp, LR, Nepochs, StepLR Nepochs/5).
RELEASED = {
    "objectpi": {"batch_pairs": 4, "views": 8, "pairs_per_object": 10, "lr": 0.00001, "lam": 1.0},
    "modelnet40": {"batch_pairs": 3, "views": 12, "pairs_per_object": 10, "lr": 0.00001, "lam": 1.0},
    "fg3d": {"batch_pairs": 9, "views": 12, "pairs_per_object": 3, "lr": 0.00005, "lam": 2.0},
}
RELEASED_SHARED = {
    "epochs": 25, "lr_step": 25 / 5, "cat_dim": 2048, "obj_dim": 2048, "alpha": 0.25, "beta": 1.0, "theta": 0.25, "gamma": 4.0,
    "early_stop_rho": 1.5, "augment": True,
    "precision": "fp32",  # the released code trains and evaluates without autocast
}  # fmt: skip


@pytest.mark.parametrize("name", list(RELEASED))
def test_recipes_are_the_released_values(name):
    assert RECIPES[name].values == {**RELEASED[name], **RELEASED_SHARED}
    assert RECIPES[name].sources == (name,)
    assert set(RECIPES[name].values) <= set(BUILTIN_DEFAULTS)


def test_resolution_explicit_then_recipe_then_builtin():
    config, how = TrainConfig(lr=1e-3).resolved("modelnet40", num_views=12)
    assert config.recipe == "modelnet40" and how.chosen_by == "the data's source"
    assert (config.lr, config.batch_pairs, config.views, config.pairs_per_object, config.lam) == (1e-3, 3, 12, 10, 1.0)
    assert how.overridden == {"lr": 1e-3}
    assert how.messages()[0].startswith("recipe: modelnet40 (the released ModelNet-40 values, from the data's source): ")
    assert how.messages()[1] == "recipe: overridden by the options given: --lr 0.001"

    config, how = TrainConfig(recipe="FG3D", views=4).resolved("objectpi", num_views=8)
    assert config.recipe == "fg3d" and how.chosen_by == "--recipe"
    assert (config.lr, config.batch_pairs, config.views, config.pairs_per_object, config.lam) == (5e-5, 9, 4, 3, 2.0)

    config, _ = TrainConfig(recipe="fg3d").resolved("fg3d", num_views=6)  # a recipe's views: at most the data's
    assert config.views == 6

    config, how = TrainConfig().resolved("synthetic", num_views=12)
    assert config.recipe is None and how.messages() == []
    assert {k: getattr(config, k) for k in BUILTIN_DEFAULTS} == BUILTIN_DEFAULTS

    with pytest.raises(PiroError, match="^recipe pies2: unknown recipe; choose one of objectpi, modelnet40, fg3d"):
        TrainConfig(recipe="pies2")


def test_configs_from_before_recipes_load():
    old = {k: v for k, v in tiny_config(None).to_dict().items() if k not in ("recipe", "lr_step")}
    config = TrainConfig.from_dict(old)
    assert config.recipe is None and config.lr_step == 5 and config.lr == 1e-3


@pytest.fixture(scope="module")
def fg3d_labelled(tiny_data, tmp_path_factory) -> Path:
    """The tiny synthetic set, its source marked as fg3d (a real FG3D file is thousands of objects)."""
    path = tmp_path_factory.mktemp("fg3d") / "fg3d.h5"
    shutil.copy(tiny_data, path)
    with h5py.File(path, "a") as handle:
        handle.attrs["source_dataset"] = "fg3d"
    return path


TINY = "--backbone tiny --no-pretrained --embed-dim 16 --epochs 1 --freeze-backbone --feature-passes 1".split()


def test_recipe_of_the_data_source_is_used_said_and_recorded(fg3d_labelled):
    result = runner.invoke(app, ["train", "--data", str(fg3d_labelled), *TINY, "--lr", "1e-3", "--name", "auto"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("data: ") and lines[1].startswith("recipe: fg3d")  # the first lines of output
    text = " ".join(result.output.split())
    assert (
        "recipe: fg3d (the released FG3D values, from the data's source): --batch-pairs 9, --views 12, --pairs-per-object 3"
        in text
    )
    assert "recipe: overridden by the options given: --lr 0.001, --epochs 1, --cat-dim 16, --obj-dim 16 run folder" in text
    recorded = json.loads(Path("runs/auto/config.json").read_text())["train"]
    assert recorded["recipe"] == "fg3d"
    assert {k: recorded[k] for k in BUILTIN_DEFAULTS} == {
        **RELEASED["fg3d"], **RELEASED_SHARED, "lr": 1e-3, "epochs": 1, "cat_dim": 16, "obj_dim": 16,
        "backbone": "tiny", "freeze_backbone": True, "train_from": None, "feature_passes": 1, "tta": False,
        "tta_scales": [1.0],
    }  # fmt: skip


def test_explicit_recipe_and_no_recipe(tiny_data):
    result = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY, "--recipe", "modelnet40", "--name", "given"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("recipe: modelnet40 (the released ModelNet-40 values, from --recipe)")
    recorded = json.loads(Path("runs/given/config.json").read_text())["train"]
    assert (recorded["recipe"], recorded["batch_pairs"], recorded["views"], recorded["lr"]) == ("modelnet40", 3, 12, 1e-5)

    result = runner.invoke(app, ["train", "--data", str(tiny_data), *TINY, "--name", "plain"])  # source "synthetic": no recipe
    assert result.exit_code == 0, result.output
    assert "recipe" not in result.output
    recorded = json.loads(Path("runs/plain/config.json").read_text())["train"]
    assert recorded["recipe"] is None and recorded["batch_pairs"] == 4 and recorded["views"] is None

    bad = runner.invoke(app, ["train", "--data", str(tiny_data), "--recipe", "nope"])
    assert bad.exit_code == 1 and "unknown recipe; choose one of objectpi, modelnet40, fg3d" in " ".join(bad.output.split())


def test_help_documents_the_recipes():
    output = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"}).output  # wide: no word is cut
    text = " ".join(output.split()).replace("│ ", "").replace(" │", "")
    assert "--recipe" in text and "Options given explicitly override it" in text and "--help-methods" in text
    output = runner.invoke(app, ["train", "--help-methods"], env={"COLUMNS": "400"}).output  # what each recipe sets
    text = " ".join(output.split()).replace("│ ", "").replace(" │", "")
    for fragment in (
        "--recipe",
        "objectpi (the released ObjectPI values): --batch-pairs 4, --views 8, --pairs-per-object 10, --lr 1e-05, --lam 1",
        "modelnet40 (the released ModelNet-40 values): --batch-pairs 3, --views 12, --pairs-per-object 10",
        "fg3d (the released FG3D values): --batch-pairs 9, --views 12, --pairs-per-object 3, --lr 5e-05, --lam 2",
        "All of these also set --epochs 25, --lr-step 5",
        "pies (the released PIEs baselines' values): --lr 1e-05, --lr-step 0, --epochs 40, --early-stop-rho 0",
    ):
        assert fragment in text, fragment


@pytest.fixture
def cut_recipe(monkeypatch):
    """A recipe that trains from a cut of the tiny backbone, as objectpi-cpu does of efficientnet_lite0."""
    recipe = Recipe("cut-test", "a test recipe", {"backbone": "tiny", "train_from": "body.6", "feature_passes": 3, "epochs": 1})
    monkeypatch.setitem(RECIPES, recipe.name, recipe)
    return recipe


def test_a_recipe_sets_the_backbone_its_cut_and_passes(cut_recipe):
    config, how = TrainConfig(recipe="cut-test").resolved("synthetic", num_views=4)
    assert (config.backbone, config.train_from, config.freeze_backbone, config.feature_passes) == ("tiny", "body.6", False, 3)
    assert "--backbone tiny, --train-from body.6, --feature-passes 3" in how.messages()[0]


def test_freeze_backbone_and_train_from_given_replace_the_recipes_other(cut_recipe, monkeypatch):
    config, how = TrainConfig(recipe="cut-test", freeze_backbone=True).resolved("synthetic", num_views=4)
    assert (config.freeze_backbone, config.train_from) == (True, None)  # not both: the given one wins
    frozen = Recipe("frozen-test", "a test recipe", {"backbone": "tiny", "freeze_backbone": True})
    monkeypatch.setitem(RECIPES, frozen.name, frozen)
    config, _ = TrainConfig(recipe="frozen-test", train_from="body.3").resolved("synthetic", num_views=4)
    assert (config.freeze_backbone, config.train_from) == (False, "body.3")
    with pytest.raises(PiroError, match="pass one of them"):  # both given: refused
        TrainConfig(freeze_backbone=True, train_from="body.3")


def test_a_recipes_cut_on_another_backbone_is_refused_naming_the_recipe(cut_recipe):
    with pytest.raises(PiroError) as caught:
        TrainConfig(recipe="cut-test", backbone="resnet50").resolved("synthetic", num_views=4)
    message = str(caught.value)  # the library names the fields; the command line, their flags
    assert message.startswith("train_from body.6: backbone resnet50 can start training at layer1, layer2, layer3, layer4")
    assert "(with options of --recipe cut-test: --backbone tiny, --train-from body.6" in message
    assert error_message(caught.value).startswith("--train-from body.6: --backbone resnet50 can start training at layer1")


def test_objectpi_cpu_recipe_trains_from_the_cli(tiny_data):
    """The CPU recipe as typed, but for its backbone (ImageNet efficientnet_lite0 on 32-px views is minutes, not seconds):
    its cut, dimensions and schedule reach the run's config."""
    args = ["train", "--data", str(tiny_data), "--recipe", "objectpi-cpu", "--backbone", "tiny", "--no-pretrained",
            "--train-from", "body.6", "--epochs", "1", "--feature-passes", "1", "--name", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads(Path("runs/cpu/config.json").read_text())["train"]
    assert recorded["recipe"] == "objectpi-cpu"
    assert (recorded["cat_dim"], recorded["obj_dim"], recorded["lr"], recorded["lr_step"]) == (256, 512, 1e-4, 2)
    assert (recorded["train_from"], recorded["freeze_backbone"], recorded["views"]) == ("body.6", False, 8)
    assert recorded["tta"] is True  # evaluate and embed flip by default


def test_without_a_gpu_piro_methods_train_the_cpu_path():
    from piro_cli.recipes import NO_GPU, resolve

    objectpi = resolve(None, {}, "objectpi", 8, "piro", cpu_only=True)
    assert objectpi.recipe.name == "objectpi-cpu" and objectpi.chosen_by == NO_GPU
    assert "--recipe full" in objectpi.messages()[0]
    other = resolve(None, {}, "synthetic", 12, "piro", cpu_only=True)
    assert other.recipe.name == "cpu"
    assert (other.values["train_from"], other.values["lr"], other.values["cat_dim"], other.values["obj_dim"]) == ("blocks.6", 1e-4, 256, 512)
    assert other.values["views"] is None  # the built-in default (every view) under the cpu values
    assert resolve(None, {"backbone": "resnet18"}, "synthetic", 12, "piro", cpu_only=True).values["train_from"] == "layer4"
    # what turns it off: a GPU, a chosen cut, a recipe, a PIEs method
    assert resolve(None, {}, "objectpi", 8, "piro", cpu_only=False).recipe.name == "objectpi"
    assert resolve(None, {"freeze_backbone": True}, "objectpi", 8, "piro", cpu_only=True).recipe.name == "objectpi"
    full = resolve("full", {}, "objectpi", 8, "piro", cpu_only=True)
    assert (full.values["train_from"], full.values["freeze_backbone"], full.values["lr"], full.values["epochs"]) == (None, False, 1e-5, 25)
    assert resolve(None, {}, "objectpi", 8, "pies", cpu_only=True).recipe.name == "pies"
