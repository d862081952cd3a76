"""Every training method (PiRO, the PIEs baselines, the metric-learning object losses, DVML) on the synthetic set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.samplers import plan_pairs, sample_pairs
from piro_cli.data.store import ViewSetStore, normalize_views
from piro_cli.errors import PiroError
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.losses import OBJECT_LOSSES
from piro_cli.methods import METHODS, build_criterion, get_method
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.retrieval.picr import TASKS
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, train
from piro_cli.training.config import method_label
from piro_cli.training.trainer import _split_pairs

runner = CliRunner()
METRIC_LOSSES = [name for name in OBJECT_LOSSES if name != "piro"]


def method_config(data: Path | None, **overrides) -> TrainConfig:
    """The tests' tiny config, with frozen backbone features and validation objects (every epoch is evaluated)."""
    return tiny_config(data, **{"freeze_backbone": True, "val_fraction": 0.25, **overrides})


VARIANTS = (
    [{"method": name} for name, spec in METHODS.items() if spec.family != "untrained"]
    + [{"method": m, "obj_loss": loss} for loss in METRIC_LOSSES for m in ("piro-dual", "piro-single")]
    + [{"method": "piro-dual", "dvml": True}, {"method": "piro-single", "obj_loss": "triplet", "dvml": True}]
)


def _variant_id(variant: dict) -> str:
    return method_label({"method": variant["method"], "obj_loss": variant.get("obj_loss"), "dvml": variant.get("dvml")})


# The part of the loss each variant adds: what must go down, not only the sum (a PIEs baseline's loss is one term).
def _own_part(variant: dict) -> str:
    if variant.get("dvml"):
        return "dvml_syn"
    if variant.get("obj_loss"):
        return "obj"
    return "total" if get_method(variant["method"]).family == "pies" else "piobj"


def _metrics_column(part: str) -> str:
    return "loss" if part == "total" else f"loss_{part}"


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_loss_decreases_over_a_few_steps_on_synthetic_views(tiny_data, variant):
    """A few optimiser steps on one batch of real synthetic view sets: the total and the variant's own term fall.

    An object-loss or DVML variant is trained on its object term alone here: with L_cat in the same (single) space
    the two compete, and a mined loss (semi-hard triplets) may rise while the sum falls.
    """
    torch.manual_seed(0)
    alone = {"losses": ("piobj",)} if variant.get("obj_loss") or variant.get("dvml") else {}
    store = ViewSetStore(tiny_data)
    config, _ = method_config(tiny_data, **variant, **alone).resolved(store.source_dataset, store.num_views)
    split = store.split("train")
    pairs = sample_pairs(plan_pairs(split.category), 1, np.random.default_rng(0))[:4]
    objects = np.concatenate([pairs[:, 0], pairs[:, 1]])
    views = normalize_views(
        np.stack([split.views_uint8(int(o), np.arange(store.num_views)) for o in objects]), torch.device("cpu")
    )
    model = PAN(PANConfig(backbone="tiny", pretrained=False, dual=config.dual, cat_dim=16, obj_dim=16,
                          aggregation=get_method(config.method).aggregation))  # fmt: skip
    criterion = build_criterion(config, len(store.categories), len(split), model.feat_dim)
    with torch.no_grad():
        feats = model.features(views)  # frozen backbone, as with --freeze-backbone
    optimizer = torch.optim.Adam(model.head_parameters() + list(criterion.parameters()), lr=1e-2)
    labels = torch.as_tensor(split.category[pairs[:, 0]])
    ids = torch.as_tensor(pairs)
    pies = get_method(config.method).family == "pies"
    history = []
    for _ in range(25):
        if pies:  # one batch of the 8 objects
            out = model.forward_features(feats)
            losses = {"total": criterion(out.sv_obj, out.mv_obj, torch.as_tensor(split.category[objects]), pooled=out.pooled_obj)}
        else:
            out_a, out_b = _split_pairs(model.forward_features(feats), len(pairs))
            losses = criterion(out_a, out_b, labels, object_ids=(ids[:, 0], ids[:, 1]), feats=(feats[:4], feats[4:]))
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    part = _own_part(variant)
    assert part in history[0], sorted(history[0])
    assert history[-1]["total"] < 0.8 * history[0]["total"], [h["total"] for h in history]
    assert history[-1][part] < history[0][part], [h[part] for h in history]


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_method_trains_and_evaluates(tiny_data, variant):
    result = train(method_config(tiny_data, **variant))
    rows = result.history
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    assert _metrics_column(_own_part(variant)) in rows[-1]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["train"]["method"] == variant["method"]
    assert config["model"]["aggregation"] == get_method(variant["method"]).aggregation
    evaluation = evaluate([result.best_path], split="test", save=False)
    values = evaluation.runs[0].values
    assert set(values) == set(TASKS) and all(0.0 <= v <= 100.0 for v in values.values())


def test_baselines_have_one_space_and_average_pooling(tiny_data):
    result = train(method_config(tiny_data, method="pi-proxy", epochs=1))
    ckpt = load_checkpoint(result.last_path)
    assert ckpt["model_config"]["dual"] is False and ckpt["model_config"]["aggregation"] == "mean"
    assert not any("attention" in key for key in ckpt["model_state"])
    assert ckpt["model_config"]["head"] == "linear"  # a linear layer to --embed-dim on backbones other than vgg16
    assert ckpt["loss_state"]["centres"].shape == (3, 16)  # one centre per category
    assert ckpt["train_config"]["batch_objects"] == 4 and ckpt["train_config"]["augmentation"] == "pies"


def test_a_baseline_epoch_is_shuffled_batches_of_whole_objects(tiny_data, monkeypatch):
    """Every training object once per epoch, in batches of --batch-objects, each with all its views."""
    import piro_cli.training.trainer as train_module

    seen = []
    real = train_module.cached_batch

    def spy(cache, objects, view_idx, rng):
        seen.append((objects.copy(), view_idx.copy()))
        return real(cache, objects, view_idx, rng)

    monkeypatch.setattr(train_module, "cached_batch", spy)
    result = train(method_config(tiny_data, method="mv-tc", epochs=2, batch_objects=4))
    data = load_checkpoint(result.last_path)["data"]
    train_objects, num_views = data["train_indices"], data["num_views"]
    assert len(train_objects) == 9  # 3 categories x 4 train objects, 1 each carved out for validation
    assert len(seen) == 4
    epochs = [seen[:2], seen[2:]]
    for batches in epochs:
        assert [len(objects) for objects, _ in batches] == [4, 5]  # 9 objects: the lone last one joins the batch before
        assert sorted(np.concatenate([objects for objects, _ in batches]).tolist()) == sorted(train_objects)
        assert all(sorted(row.tolist()) == list(range(num_views)) for _, views in batches for row in views)
    assert [o.tolist() for o, _ in epochs[0]] != [o.tolist() for o, _ in epochs[1]]


def test_mean_aggregation_is_normalised_average_of_the_head_and_order_invariant():
    torch.manual_seed(0)
    model = PAN(PANConfig(backbone="tiny", pretrained=False, dual=False, obj_dim=8, aggregation="mean")).eval()
    feats = torch.randn(2, 5, model.feat_dim)
    out = model.forward_features(feats)
    expected = torch.nn.functional.normalize(model.obj_head(feats).mean(dim=1), dim=-1)
    assert torch.allclose(out.mv_obj, expected, atol=1e-6)
    assert out.mv_cat is out.mv_obj
    assert torch.allclose(out.attn_obj, torch.full((2, 5, 5), 0.2))
    shuffled = model.forward_features(feats[:, torch.randperm(5)])
    assert torch.allclose(shuffled.mv_obj, out.mv_obj, atol=1e-6)


def test_unknown_aggregation_is_refused():
    with pytest.raises(PiroError, match="aggregation 'max'"):
        PANConfig(aggregation="max")


def test_dvml_branch_is_training_only(tiny_data):
    result = train(method_config(tiny_data, dvml=True, epochs=1))
    ckpt = load_checkpoint(result.last_path)
    assert any(key.startswith("dvml.") for key in ckpt["loss_state"])
    assert not any("dvml" in key for key in ckpt["model_state"])
    assert {"loss_dvml_syn", "loss_dvml_kl", "loss_dvml_rec"} <= set(result.history[-1])


def test_resume_of_a_proxy_baseline_restores_its_proxies(tiny_data):
    first = train(method_config(tiny_data, method="mv-proxy", epochs=1, name="proxy"))
    resumed = train(TrainConfig(), resume=first.run_dir, resume_epochs=2)
    assert resumed.epochs_done == 2
    assert load_checkpoint(resumed.last_path)["train_config"]["method"] == "mv-proxy"


def test_resume_of_a_baseline_from_before_the_released_losses_is_refused(tiny_data):
    first = train(method_config(tiny_data, method="mv-proxy", epochs=1, name="old"))
    state = torch.load(first.last_path, weights_only=False)
    state["loss_state"] = {"category_loss.loss.proxies": torch.zeros(3, 16)}  # what the paraphrased loss saved
    torch.save(state, first.last_path)
    with pytest.raises(PiroError, match="cannot be resumed: retrain it"):
        train(TrainConfig(), resume=first.run_dir, resume_epochs=2)


def test_method_labels():
    released = {"separation": "squared", "train_lsoftmax_weights": False}
    assert method_label({"dual": True, **released}) == "piro-dual"
    assert method_label({"dual": False, "losses": ["cat", "piobj"], **released}) == "piro-single"
    assert method_label({"method": "mv-cnn"}) == "mv-cnn"
    triplet = {"method": "piro-single", "obj_loss": "triplet", "dvml": True, "losses": ["cat", "piobj"], **released}
    assert method_label(triplet) == "piro-single+triplet+dvml"
    assert method_label({"method": "piro-dual", "losses": ["cat", "piobj"], **released}) == "piro-dual+losses=cat,piobj"
    # runs written before --separation / --train-lsoftmax-weights trained with the plain distance and a trained W
    assert method_label({"dual": True}) == "piro-dual+separation=plain+lsoftmax-trained"


def test_configs_from_before_methods_load():
    old = method_config(None).to_dict()
    for key in ("method", "obj_loss", "dvml", "dvml_kl", "dvml_rec", "dvml_syn", "pi_alpha", "pi_beta", "val_seed"):
        old.pop(key)
    old.update(dual=False, seed=3)
    config = TrainConfig.from_dict(old)
    assert config.method == "piro-single" and config.val_seed == 3 and config.obj_loss == "piro"
    assert config.losses == ("cat", "piobj", "picat")  # the recorded terms, not piro-single's default


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "mv-cnn", "--dual"], "--dual contradicts --method mv-cnn"),
        (["--method", "piro-dual", "--single"], "--single contradicts --method piro-dual"),
        (["--method", "nonsense"], "unknown method 'nonsense'; choose one of piro-dual"),
        (["--obj-loss", "arcface"], "unknown object loss 'arcface'; choose one of piro, contrastive"),
        (["--method", "pi-tc", "--obj-loss", "triplet"], "pi-tc has its own loss"),
        (["--method", "mv-proxy", "--dvml"], "DVML works on the object space"),
        (["--dvml", "--losses", "cat,picat"], "keep 'piobj'"),
        (["--method", "mv-cnn", "--pi-alpha", "0.5"], "--pi-alpha: only pi-cnn, pi-proxy, pi-tc"),
        (["--batch-objects", "4"], "--batch-objects: piro-dual trains on pairs"),
        (["--method", "pi-tc", "--augmentation", "blur"], "--augmentation 'blur': choose one of piro, pies"),
    ],
)
def test_cli_refuses_contradictory_method_options(tiny_data, args, message):
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--backbone", "tiny", *args])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split()), result.output
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_cli_single_flag_and_method_agree(tiny_data):
    args = ["train", "--data", str(tiny_data), "--backbone", "tiny", "--no-pretrained", "--embed-dim", "16", "--epochs", "1",
            "--pairs-per-object", "1", "--freeze-backbone", "--early-stop-rho", "0"]  # fmt: skip
    result = runner.invoke(app, [*args, "--method", "mv-tc", "--single", "--name", "tc"])
    assert result.exit_code == 0, result.output
    assert json.loads(Path("runs/tc/config.json").read_text())["train"]["method"] == "mv-tc"
    result = runner.invoke(app, [*args, "--single", "--obj-loss", "npair", "--name", "np"])
    assert result.exit_code == 0, result.output
    assert method_label(json.loads(Path("runs/np/config.json").read_text())["train"]) == "piro-single+npair"


def test_help_lists_every_method_and_object_loss():
    text = " ".join(runner.invoke(app, ["train", "--help"], terminal_width=200).output.split())
    for name in [*METHODS, *OBJECT_LOSSES]:
        assert name in text, name


def test_attention_figure_of_a_baseline_says_average_pooling(tiny_data):
    from piro_cli.viz.attention import panels_of
    from piro_cli.viz.embeddings import open_run, resolve_runs

    result = train(method_config(tiny_data, method="mv-cnn", epochs=1, name="pool"))
    run = open_run(resolve_runs([result.run_dir])[0])
    [(title, weights)] = panels_of(run, 0)
    assert "average pooling" in title
    assert np.allclose(weights, 1.0 / weights.shape[0])



def test_the_backbone_baseline_is_the_untrained_features(tiny_data):
    """`--method backbone`: no step, a normal run folder whose embeddings are the backbone's features, L2-normalised
    (a view set: the normalised mean of its views' features), computed here straight from the backbone."""
    result = train(method_config(tiny_data, method="backbone", epochs=5))
    assert result.epochs_done == 1 and "loss" not in result.history[0] and "val_mean" in result.history[0]
    checkpoint = load_checkpoint(result.best_path)
    assert checkpoint["model_config"]["head"] == "identity" and checkpoint["model_config"]["dual"] is False
    model = PAN(PANConfig.from_dict({**checkpoint["model_config"], "pretrained": False}))
    model.load_state_dict(checkpoint["model_state"])
    model.eval()
    split = ViewSetStore(tiny_data).split("test")
    views = normalize_views(np.stack([split.views_uint8(i) for i in range(len(split))]), torch.device("cpu"))
    with torch.no_grad():
        feats = model.backbone(views.flatten(0, 1)).reshape(len(split), split.num_views, -1)
        out = model(views)
    assert torch.allclose(out.sv_obj, torch.nn.functional.normalize(feats, dim=-1), atol=1e-6)
    assert torch.allclose(out.mv_obj, torch.nn.functional.normalize(feats.mean(1), dim=-1), atol=1e-6)
    assert out.sv_cat is out.sv_obj
    assert all(name.startswith("backbone.") for name in checkpoint["model_state"])  # no head weights at all
    values = evaluate([result.best_path], split="val", save=False).runs[0].values
    assert set(values) == set(TASKS)
    assert method_label(json.loads((result.run_dir / "config.json").read_text())["train"]) == "backbone"
