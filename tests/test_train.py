"""`piro train` end to end on a tiny synthetic set with the tiny backbone."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import poison_the_loss, tiny_config
from typer.testing import CliRunner

import piro_cli.training.trainer as train_module
from piro_cli.cli import app
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import DataError, PiroError
from piro_cli.retrieval.picr import TASKS
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, TrainingDiverged, train

runner = CliRunner()


def read_metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("freeze", [True, False])
def test_run_folder_and_checkpoint(tiny_data, freeze):
    result = train(tiny_config(tiny_data, freeze_backbone=freeze, val_fraction=0.25, feature_passes=2))
    run = result.run_dir
    assert run == Path("runs/exp")
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "last.pt", "best.pt"}
    assert len(list(Path("runs/feature-cache").glob("tiny-*.pt"))) == int(freeze)
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("loss", "loss_cat", "loss_piobj", "loss_picat", "d_intra_max", "d_inter_min", "rho", "val_mean", "lr"):
        assert math.isfinite(float(rows[-1][key])), key
    assert all(f"val_{task}" in rows[-1] for task in TASKS)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["freeze_backbone"] == freeze and config["data"]["val"]["split"] == "train"

    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["categories"][:1] == ["mug"]
    assert ckpt["model_config"]["backbone"] == "tiny" and ckpt["data"]["fingerprint"]
    assert set(ckpt["model_state"]) == set(load_checkpoint(run / "best.pt")["model_state"])
    # validation objects are not training objects
    assert not set(ckpt["data"]["val"]["indices"]) & set(ckpt["data"]["train_indices"])


def test_frozen_and_full_checkpoints_have_the_same_format(tiny_data):
    frozen = load_checkpoint(train(tiny_config(tiny_data, epochs=1, freeze_backbone=True)).last_path)
    full = load_checkpoint(train(tiny_config(tiny_data, epochs=1)).last_path)
    assert set(frozen) == set(full)
    assert {k: v.shape for k, v in frozen["model_state"].items()} == {k: v.shape for k, v in full["model_state"].items()}


def test_same_seed_same_run_on_cpu(tiny_data):
    a = train(tiny_config(tiny_data, epochs=1))
    b = train(tiny_config(tiny_data, epochs=1))
    assert a.run_dir.name == "exp" and b.run_dir.name == "exp2"
    sa, sb = load_checkpoint(a.last_path)["model_state"], load_checkpoint(b.last_path)["model_state"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


class InterruptAt:
    """A reporter that presses Ctrl-C at a given step of a given epoch."""

    def __init__(self, epoch: int, step: int) -> None:
        self.target = f"epoch {epoch}/"
        self.step = step

    def info(self, message: str) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def progress(self, stage: str, done: int, total: int) -> None:
        if stage.startswith(self.target) and done == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("freeze", [True, False])
def test_resume_after_kill_matches_uninterrupted_run(tiny_data, freeze):
    config = tiny_config(tiny_data, epochs=3, freeze_backbone=freeze, val_fraction=0.25)
    reference = train(config)
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_config(tiny_data, epochs=3, freeze_backbone=freeze, val_fraction=0.25, name="killed"), reporter=InterruptAt(2, 2)
        )
    killed = Path("runs/killed")
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1
    resumed = train(TrainConfig(), resume=killed)
    assert resumed.run_dir == killed and resumed.epochs_done == 3
    ref, res = load_checkpoint(reference.last_path), load_checkpoint(resumed.last_path)
    for key in ref["model_state"]:
        torch.testing.assert_close(ref["model_state"][key], res["model_state"][key], msg=key)
    assert [int(r["epoch"]) for r in read_metrics(killed)] == [1, 2, 3]
    assert read_metrics(killed)[-1]["loss"] == read_metrics(reference.run_dir)[-1]["loss"]
    # the statistic before the first resumed epoch is recomputed from the checkpoint: the same as uninterrupted
    columns = ("d_intra_max", "d_inter_min", "rho")
    assert [[r[c] for c in columns] for r in read_metrics(killed)] == [
        [r[c] for c in columns] for r in read_metrics(reference.run_dir)
    ]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good(tiny_data, monkeypatch):
    run = train(tiny_config(tiny_data, epochs=1, name="nan"))
    good = load_checkpoint(run.last_path)["model_state"]
    poison_the_loss(monkeypatch)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1/\d+.*last.pt"):
        train(TrainConfig(), resume=run.run_dir, resume_epochs=2)
    kept = load_checkpoint(run.last_path)
    assert kept["epoch"] == 1 and all(torch.equal(kept["model_state"][k], good[k]) for k in good)


def test_early_stop_on_rho(tiny_data):
    # rho of the initial model is above the threshold: the first epoch runs, then the run stops (tests/test_convergence.py)
    result = train(tiny_config(tiny_data, epochs=3, early_stop_rho=1e-6))
    assert result.epochs_done == 1 and result.stop_reason.startswith("early stop")


def test_both_objects_of_a_pair_see_the_same_views(tiny_data, monkeypatch):
    seen = []
    original = train_module.cached_batch

    def spy(cache, objects, view_idx, rng):
        seen.append((objects.copy(), view_idx.copy()))
        return original(cache, objects, view_idx, rng)

    monkeypatch.setattr(train_module, "cached_batch", spy)
    train(tiny_config(tiny_data, epochs=1, freeze_backbone=True, feature_passes=1, views=5))
    categories = ViewSetStore(tiny_data).split("train").category
    assert seen
    for objects, view_idx in seen:
        half = len(objects) // 2  # the batch is [first objects of the pairs; their partners]
        np.testing.assert_array_equal(view_idx[:half], view_idx[half:])
        assert view_idx.shape[1] == 5 and all(len(set(row)) == 5 for row in view_idx.tolist())
        assert (categories[objects[:half]] == categories[objects[half:]]).all() and (objects[:half] != objects[half:]).all()
    assert len({tuple(row) for _, views in seen for row in views.tolist()}) > 1  # the views change from pair to pair


def test_data_defaults_to_latest_file_and_errors_without_one(tiny_data):
    with pytest.raises(DataError, match="piro prepare"):
        train(tiny_config(None))
    Path("data").mkdir()
    Path("data/synthetic.h5").symlink_to(tiny_data)
    result = train(tiny_config(None, epochs=1))
    assert load_checkpoint(result.last_path)["data"]["path"] == "data/synthetic.h5"


def test_loss_ablation_and_single_space(tiny_data):
    result = train(tiny_config(tiny_data, epochs=1, dual=False, losses=("cat", "piobj")))
    row = read_metrics(result.run_dir)[0]
    assert "loss_picat" not in row and "loss_piobj" in row
    assert load_checkpoint(result.last_path)["model_config"]["dual"] is False


def test_bad_options(tiny_data):
    with pytest.raises(DataError, match="--views 99"):
        train(tiny_config(tiny_data, views=99))
    with pytest.raises(PiroError, match="no CUDA"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        train(tiny_config(tiny_data, device="cuda"))


def test_cli_train_as_typed(tiny_data):
    Path("data").mkdir()
    Path("data/synthetic.h5").symlink_to(tiny_data)
    argv = [
        "train",
        "--dual",
        "--epochs",
        "1",
        "--backbone",
        "tiny",
        "--no-pretrained",
        "--embed-dim",
        "16",
        "--pairs-per-object",
        "1",
    ]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "data: data/synthetic.h5" in result.output.splitlines()[0]
    assert "done" in result.output and Path("runs/exp/best.pt").exists()
    bad = runner.invoke(app, ["train", "--losses", "cat,nope"])
    assert bad.exit_code == 1 and "nope" in bad.output


def test_checkpoint_loading_is_safe_and_checked(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "piro-checkpoint", "f": print}, evil)  # a pickled callable: weights_only refuses it
    with pytest.raises(PiroError, match="piro refuses to run code from a checkpoint"):
        load_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(PiroError, match="not a piro checkpoint"):
        load_checkpoint(other)
    with pytest.raises(PiroError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_after_sigkill_of_the_process(tiny_data):
    """A real `piro train` process killed with SIGKILL mid-run continues with --resume to the planned epochs."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = [
        sys.executable, "-m", "piro_cli", "train", "--data", str(tiny_data), "--backbone", "tiny", "--no-pretrained",
        "--embed-dim", "16", "--epochs", "40", "--pairs-per-object", "2", "--early-stop-rho", "0", "--name", "victim",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = Path("runs/victim/last.pt")
    deadline = time.monotonic() + 300  # generous: CI machines can be heavily loaded
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert last.exists(), "the training process wrote no checkpoint within 300 s"
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < 40, "the run finished before it could be killed"
    result = runner.invoke(app, ["train", "--resume", "runs/victim"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(last)["epoch"] == 40
    assert [int(r["epoch"]) for r in read_metrics(Path("runs/victim"))] == list(range(1, 41))
    assert not list(Path("runs/victim").glob(".*tmp*"))


def test_estimate_line_by_hand():
    from piro_cli.training.trainer import estimate_line

    # 5 steps in 10 s of an epoch of 60 steps: 120 s an epoch, 3 epochs left: 6 min
    assert estimate_line(10.0, 5, 60, 3) == "estimate: 2.0 min an epoch, about 6.0 min for the 3 epochs left (training steps; evaluation adds to it)"
    assert estimate_line(30.0, 1, 1000, 25).startswith("estimate: 8.3 hours an epoch, about 208.3 hours")
