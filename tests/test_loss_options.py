"""The released loss options end to end: PiRO-SE's default terms, the frozen L-Softmax weights, the separation
distance, and configs written before these options (issue 10, "Losses as released")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from typer.testing import CliRunner

import piro_cli.training.trainer as train_module
from piro_cli.cli import app
from piro_cli.methods import build_criterion
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, train
from piro_cli.training.config import method_label

runner = CliRunner()
W_KEY = "cat.lsoftmax.W"  # the L-Softmax class weights in a checkpoint's loss_state


def test_default_loss_terms_follow_the_released_training_scripts():
    # trainPiRO_Dual.py: L_cat + L_picat + L_piobj; trainPiRO_Single.py: L_cat + L_piobj
    assert TrainConfig(method="piro-dual").losses == ("cat", "piobj", "picat")
    assert TrainConfig(method="piro-single").losses == ("cat", "piobj")
    assert TrainConfig(dual=False).losses == ("cat", "piobj")
    assert TrainConfig(method="piro-single", losses=("cat", "piobj", "picat")).losses == ("cat", "piobj", "picat")
    assert method_label(TrainConfig(method="piro-single").to_dict()) == "piro-single"
    assert method_label(TrainConfig(method="piro-dual").to_dict()) == "piro-dual"
    full = TrainConfig(method="piro-single", losses=("cat", "piobj", "picat")).to_dict()
    assert method_label(full) == "piro-single+losses=cat,piobj,picat"
    assert method_label(TrainConfig(separation="plain").to_dict()) == "piro-dual+separation=plain"
    assert method_label(TrainConfig(train_lsoftmax_weights=True).to_dict()) == "piro-dual+lsoftmax-trained"


def test_configs_written_before_the_options_load_with_what_they_trained():
    old = TrainConfig(method="piro-single", losses=("cat", "piobj", "picat")).to_dict()
    for key in ("separation", "train_lsoftmax_weights"):
        old.pop(key)
    config = TrainConfig.from_dict(old)
    assert (config.separation, config.train_lsoftmax_weights) == ("plain", True)
    assert config.losses == ("cat", "piobj", "picat")
    older = {k: v for k, v in old.items() if k != "losses"}  # from before --losses: all three terms
    assert TrainConfig.from_dict(older).losses == ("cat", "piobj", "picat")
    new = TrainConfig.from_dict(TrainConfig(method="piro-single").to_dict())
    assert (new.losses, new.separation, new.train_lsoftmax_weights) == (("cat", "piobj"), "squared", False)


def test_lsoftmax_weights_keep_their_seeded_init_in_training_unless_asked(tiny_data, monkeypatch):
    inits = []

    def recording_build_criterion(*args, **kwargs):
        criterion = build_criterion(*args, **kwargs)
        inits.append(criterion.cat.lsoftmax.W.detach().clone())  # W as train() builds it, before any step
        return criterion

    monkeypatch.setattr(train_module, "build_criterion", recording_build_criterion)
    frozen = load_checkpoint(train(tiny_config(tiny_data, epochs=1, name="frozen", freeze_backbone=True)).last_path)
    trained = load_checkpoint(
        train(tiny_config(tiny_data, epochs=1, name="w", freeze_backbone=True, train_lsoftmax_weights=True)).last_path
    )
    assert torch.equal(inits[0], inits[1])  # the random init depends on the seed only
    assert torch.equal(frozen["loss_state"][W_KEY], inits[0])  # saved, and never stepped
    assert not torch.equal(trained["loss_state"][W_KEY], inits[1])
    recorded = json.loads(Path("runs/frozen/config.json").read_text())
    assert recorded["train"]["separation"] == "squared" and recorded["train"]["train_lsoftmax_weights"] is False
    assert recorded["loss"]["separation"] == "squared" and recorded["loss"]["train_lsoftmax_weights"] is False


def test_cli_single_trains_the_released_pirose_terms_and_takes_the_options(tiny_data):
    args = ["train", "--data", str(tiny_data), "--backbone", "tiny", "--no-pretrained", "--embed-dim", "16", "--epochs", "1",
            "--pairs-per-object", "1", "--freeze-backbone", "--early-stop-rho", "0"]  # fmt: skip
    result = runner.invoke(app, [*args, "--single", "--name", "se"])
    assert result.exit_code == 0, result.output
    recorded = json.loads(Path("runs/se/config.json").read_text())["train"]
    assert recorded["losses"] == ["cat", "piobj"] and method_label(recorded) == "piro-single"
    assert "loss_picat" not in Path("runs/se/metrics.csv").read_text().splitlines()[0]
    result = runner.invoke(app, [*args, "--separation", "plain", "--train-lsoftmax-weights", "--name", "eq7"])
    assert result.exit_code == 0, result.output
    recorded = json.loads(Path("runs/eq7/config.json").read_text())["train"]
    assert (recorded["separation"], recorded["train_lsoftmax_weights"]) == ("plain", True)
    assert recorded["losses"] == ["cat", "piobj", "picat"]


@pytest.mark.parametrize("flag", ["--separation", "--train-lsoftmax-weights"])
def test_help_documents_the_loss_options(flag):
    assert flag in " ".join(runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output.split())


def test_cli_refuses_an_unknown_separation(tiny_data):
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--backbone", "tiny", "--separation", "cubic"])
    assert result.exit_code != 0 and "--separation" in result.output and "squared, plain" in result.output
