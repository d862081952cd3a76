"""Issue #11, as a hostile or clumsy user: damaged and malicious checkpoints, empty error messages, numeric options,
--skip-bad, failed trainings and `--resume --data`. Every case: one clear line, a non-zero exit, nothing left behind."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import typer
from conftest import make_image_tree, poison_the_loss, tiny_config, write_image
from typer.testing import CliRunner

import piro_cli.training.trainer as train_module
from piro_cli.cli import app
from piro_cli.cli.common import handle_errors
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.errors import DataError, PiroError
from piro_cli.runs import load_checkpoint
from piro_cli.training import train

runner = CliRunner()


def error_line(result) -> str:
    """The one line a failed command explains itself with (piro's `error:` line, or click's usage error), checked:
    a non-zero exit, no traceback, and exactly one such line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line.strip("│ ") for line in result.stderr.splitlines() if line.startswith("error:") or "Invalid value" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A one-epoch run folder (frozen tiny backbone); tests copy it before changing it."""
    project = tmp_path_factory.mktemp("project")
    config = tiny_config(tiny_data, project=str(project), name="base", epochs=1, freeze_backbone=True, feature_passes=1)
    return train(config).run_dir


# ----------------------------------------------------------------------------- checkpoints piro did not write


class RunsCode:
    """Unpickling this runs `exec`: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def evaluate_line(checkpoint: Path, data: Path) -> str:
    return error_line(runner.invoke(app, ["evaluate", str(checkpoint), "--data", str(data), "--no-save"]))


def test_empty_checkpoint_is_one_line_not_an_index_error(tmp_path, tiny_data):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    line = evaluate_line(empty, tiny_data)
    assert "empty.pt: empty file (0 bytes)" in line and "best.pt or last.pt" in line


def test_truncated_checkpoint_says_so_in_whole_sentences(tmp_path, tiny_data, trained_run):
    whole = (trained_run / "best.pt").read_bytes()
    half = tmp_path / "half.pt"
    half.write_bytes(whole[: len(whole) // 2])
    line = evaluate_line(half, tiny_data)
    assert "half.pt: truncated or damaged: " in line
    # the message ends with piro's advice, not inside torch's text (which went on about "a high likelihood that ...")
    assert line.endswith("convert them with `piro import-weights`)") and "likelihood" not in line


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, tiny_data, writer):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"format": "piro-checkpoint", "model_state": RunsCode(marker)}, evil)
    else:
        with evil.open("wb") as handle:
            pickle.dump({"model_state": RunsCode(marker)}, handle)
    with evil.open("rb") as handle:  # the file really is malicious: a plain unpickling runs its code
        pickle.load(handle) if writer == "pickle.dump" else torch.load(handle, weights_only=False)
    assert marker.exists()
    marker.unlink()

    line = evaluate_line(evil, tiny_data)
    assert not marker.exists()
    assert "evil.pt: refused" in line and "piro refuses to run code from a checkpoint" in line
    assert "weights_only" not in line and "`piro import-weights`" in line
    if writer == "torch.save":
        assert re.search(r"\((builtins\.)?exec\)", line)  # names what it would have called


def test_random_bytes_are_not_a_pytorch_file(tmp_path, tiny_data):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(b"\x13\x37" + os.urandom(4000))
    assert "noise.pt: not a PyTorch file (neither a zip archive nor a pickle)" in evaluate_line(noise, tiny_data)


def test_error_handler_survives_errors_without_a_message():
    probe = typer.Typer()

    @probe.command()
    @handle_errors
    def fail(kind: str) -> None:
        raise {"piro": PiroError, "data": DataError}[kind]()

    for kind, name in (("piro", "PiroError"), ("data", "DataError")):
        line = error_line(runner.invoke(probe, [kind]))
        assert line.startswith(f"error: {name} without details (") and len(line) > len(f"error: {name} without details ()")


def test_a_long_error_stays_one_line(tmp_path, tiny_data):
    """rich wrapped messages at 80 columns when stderr is not a terminal: one error became several lines."""
    long_name = tmp_path / ("x" * 120 + ".pt")
    long_name.write_bytes(b"")
    result = runner.invoke(app, ["evaluate", str(long_name), "--data", str(tiny_data)])
    assert error_line(result).startswith(f"error: {long_name}: empty file")
    assert [line for line in result.stderr.splitlines() if line.strip()] == [error_line(result)]


# ----------------------------------------------------------------------------- --skip-bad


def test_embed_images_skip_bad_leaves_out_unreadable_photos(tmp_path, trained_run):
    good = [tmp_path / "front.png", tmp_path / "side.png"]
    for seed, path in enumerate(good):
        write_image(path, seed, size=32)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    checkpoint = str(trained_run / "best.pt")

    refused = error_line(runner.invoke(app, ["embed", checkpoint, "--images", str(good[0]), str(bad), str(good[1])]))
    assert "broken.png: cannot read image" in refused and "--skip-bad" in refused
    assert "--skip-bad" in runner.invoke(app, ["embed", "--help"]).output  # the flag the message suggests exists

    skipped = runner.invoke(
        app, ["embed", checkpoint, "--images", str(good[0]), str(bad), str(good[1]), "--skip-bad", "--out", "with.json"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 of 3 photos" in skipped.stderr and "broken.png: cannot read image" in skipped.stderr
    assert "pass --skip-bad" not in skipped.output
    reference = runner.invoke(app, ["embed", checkpoint, "--images", str(good[0]), str(good[1]), "--out", "without.json"])
    assert reference.exit_code == 0, reference.output
    with_bad, without = json.loads(Path("with.json").read_text()), json.loads(Path("without.json").read_text())
    assert with_bad["images"] == [str(p) for p in good] and with_bad["skipped"][0]["image"] == str(bad)
    assert with_bad["mv_obj"] == without["mv_obj"] and with_bad["sv_cat"] == without["sv_cat"]

    assert "only with --images" in error_line(runner.invoke(app, ["embed", checkpoint, "--skip-bad"]))


def test_prepare_skip_bad_reports_what_it_skipped_without_suggesting_the_flag(tmp_path):
    tree = make_image_tree(tmp_path / "raw", {"train": {"Mug": 2, "Cup": 2}, "test": {"Mug": 1, "Cup": 1}})
    (tree / "train" / "Mug" / "Mug obj1" / "Mug obj1_View2.png").write_bytes(b"this is not a png")
    out = tmp_path / "o.h5"
    refused = error_line(runner.invoke(app, ["prepare", "objectpi", str(tree), "--out", str(out), "--size", "16"]))
    assert "Mug obj1_View2.png: cannot read image" in refused and "or pass --skip-bad to skip it" in refused
    result = runner.invoke(app, ["prepare", "objectpi", str(tree), "--out", str(out), "--size", "16", "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable objects" in result.stderr and "Mug obj1_View2.png: cannot read image" in result.stderr
    assert "--skip-bad" not in result.output


# ----------------------------------------------------------------------------- failed trainings


def train_argv(data: Path, project: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--project", str(project), "--backbone", "tiny", "--no-pretrained",
            "--device", "cpu", "--freeze-backbone", "--feature-passes", "1", "--epochs", "2", "--pairs-per-object", "2",
            "--embed-dim", "16", "--lr", "1e-3", "--early-stop-rho", "0", *extra]  # fmt: skip


def test_nan_in_the_first_epoch_names_no_missing_checkpoint_and_leaves_no_folder(tmp_path, tiny_data, monkeypatch):
    poison_the_loss(monkeypatch)
    project = tmp_path / "runs"
    line = error_line(runner.invoke(app, train_argv(tiny_data, project)))
    assert "loss became nan at epoch 1, step 1/" in line and "no epoch had finished, so none was saved" in line
    assert ".pt" not in line and str(project) not in line
    assert [p.name for p in project.iterdir()] == ["feature-cache"]  # the shared cache stays, the run folder does not


def test_nan_in_a_resumed_run_names_its_last_checkpoint_and_keeps_the_folder(tmp_path, trained_run, monkeypatch):
    run = Path(shutil.copytree(trained_run, tmp_path / "resumed"))
    before = (run / "last.pt").read_bytes()
    poison_the_loss(monkeypatch)
    line = error_line(runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"]))
    assert f"the last good checkpoint is {run / 'last.pt'}" in line
    assert (run / "last.pt").read_bytes() == before and (run / "best.pt").is_file()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_training_stopped_before_its_first_epoch_leaves_no_folder(tmp_path, tiny_data, monkeypatch, stop):
    def stopped(*args, **kwargs):
        raise stop("stopped in epoch 1")

    monkeypatch.setattr(train_module.Trainer, "epoch", stopped)
    project = tmp_path / "runs"
    if stop is KeyboardInterrupt:  # Ctrl-C through the command line
        assert runner.invoke(app, train_argv(tiny_data, project)).exit_code == 130
    else:
        with pytest.raises(RuntimeError, match="stopped in epoch 1"):
            train(tiny_config(tiny_data, project=str(project), freeze_backbone=True, feature_passes=1))
    assert [p.name for p in project.iterdir()] == ["feature-cache"]


def test_a_training_stopped_after_an_epoch_keeps_its_folder(tmp_path, tiny_data, monkeypatch):
    original = train_module.Trainer.epoch

    def second_epoch_fails(self, epoch):
        if epoch == 2:
            raise RuntimeError("stopped in epoch 2")
        return original(self, epoch)

    monkeypatch.setattr(train_module.Trainer, "epoch", second_epoch_fails)
    project = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="stopped in epoch 2"):
        train(tiny_config(tiny_data, project=str(project), name="kept", epochs=2, freeze_backbone=True, feature_passes=1))
    assert load_checkpoint(project / "kept" / "last.pt")["epoch"] == 1


# ----------------------------------------------------------------------------- numeric options

TRAIN_CASES = [
    (["--embed-dim", "0"], "--embed-dim"),
    (["--embed-dim", "-3"], "--embed-dim"),
    (["--cat-dim", "0"], "--cat-dim"),
    (["--obj-dim", "0"], "--obj-dim"),  # fell back to --embed-dim silently
    (["--lr", "0"], "--lr 0.0"),  # was accepted
    (["--lr", "-1"], "--lr -1.0"),
    (["--lr", "nan"], "--lr nan"),
    (["--lr", "inf"], "--lr inf"),
    (["--alpha", "nan"], "--alpha nan"),
    (["--beta", "-1"], "--beta -1.0"),
    (["--theta", "inf"], "--theta inf"),
    (["--lam", "nan"], "--lam nan"),
    (["--gamma", "2.5"], "gamma"),
    (["--gamma", "nan"], "gamma"),
    (["--dvml", "--dvml-kl", "nan"], "--dvml-kl nan"),
    (["--dvml", "--dvml-rec", "-1"], "--dvml-rec -1.0"),
    (["--dvml", "--dvml-syn", "inf"], "--dvml-syn inf"),
    (["--method", "pi-cnn", "--pi-alpha", "nan"], "--pi-alpha nan"),
    (["--method", "pi-tc", "--pi-beta", "-1"], "--pi-beta -1.0"),
    (["--early-stop-rho", "nan"], "--early-stop-rho nan"),
    (["--early-stop-rho", "-1"], "--early-stop-rho -1.0"),
    (["--val-fraction", "nan"], "--val-fraction nan"),
    (["--val-fraction", "1.5"], "--val-fraction 1.5"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**40)], "--seed"),
    (["--val-seed", "-1", "--val-fraction", "0.3"], "--val-seed"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-pairs", "0"], "--batch-pairs"),
    (["--pairs-per-object", "-2"], "--pairs-per-object"),
    (["--views", "0"], "--views"),
    (["--views", "99"], "--views 99"),
    (["--lr-step", "-1"], "--lr-step"),
    (["--feature-passes", "0"], "--feature-passes"),
    (["--method", "mv-cnn", "--batch-objects", "0"], "--batch-objects"),
]


@pytest.mark.parametrize(("options", "named"), TRAIN_CASES, ids=[" ".join(o) for o, _ in TRAIN_CASES])
def test_bad_train_numbers_get_one_line(tmp_path, tiny_data, options, named):
    # options after the defaults of train_argv override them
    result = runner.invoke(app, train_argv(tiny_data, tmp_path / "runs", *options))
    assert named in error_line(result)
    assert not (tmp_path / "runs").exists()


OTHER_CASES = [
    (["prepare", "synthetic", "--size", "0"], "--size 0"),
    (["prepare", "synthetic", "--size", "100000"], "--size 100000"),  # a memory-allocation traceback
    (["prepare", "synthetic", "--views", "0"], "--views 0"),
    (["prepare", "synthetic", "--workers", "0"], "--workers"),
    (["prepare", "synthetic", "--seed", "-1"], "--seed"),  # a numpy traceback
    (["prepare", "synthetic", "--categories", "0"], "--categories 0"),
    (["prepare", "synthetic", "--objects-per-category", "1"], "--objects-per-category 1"),
    (["prepare", "synthetic", "--test-fraction", "nan"], "--test-fraction nan"),
    (["prepare", "modelnet40", "raw", "--per-category", "0"], "--per-category"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--seed", "-1"], "--seed"),  # a numpy traceback
    (["demo", "--size", "8"], "--size 8"),
    (["demo", "--categories", "0"], "--categories 0"),
    (["visualize", "runs/x", "--queries", "0"], "--queries"),
    (["visualize", "runs/x", "--top-k", "0"], "--top-k"),
    (["visualize", "runs/x", "--seed", "-1"], "--seed"),  # a numpy traceback after the embedding
    (["embed", "runs/x", "--top", "0"], "--top"),
]


@pytest.mark.parametrize(("argv", "named"), OTHER_CASES, ids=[" ".join(a) for a, _ in OTHER_CASES])
def test_bad_numbers_of_the_other_commands_get_one_line(tmp_path, argv, named):
    assert named in error_line(runner.invoke(app, argv))
    assert list(Path().iterdir()) == []  # nothing written (the tests run in an empty folder)


# ----------------------------------------------------------------------------- --resume with --data


def resumed(run: Path, *options: str):
    return runner.invoke(app, ["train", "--resume", str(run), *options])


def move_data_of(run: Path, to: Path) -> None:
    """Record in the run's last.pt that its data file was `to`, as if the data had been moved away since."""
    checkpoint = load_checkpoint(run / "last.pt")
    checkpoint["data"]["path"] = str(to)
    del checkpoint["path"]  # added by load_checkpoint
    torch.save(checkpoint, run / "last.pt")


def test_resume_refuses_other_data(tmp_path, tiny_data, trained_run):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    last = (run / "last.pt").read_bytes()
    other = tmp_path / "other.h5"
    prepare_dataset(
        "synthetic", None, other, PrepareOptions(size=32),
        {"seed": 1, "categories": 3, "objects_per_category": 5, "test_fraction": 0.2},
    )  # fmt: skip
    line = error_line(resumed(run, "--data", str(other), "--epochs", "2"))
    assert f"--data {other}: this run trains on {tiny_data}, and --resume continues on that file" in line
    assert (run / "last.pt").read_bytes() == last

    link = tmp_path / "link.h5"  # the same file under another name is the run's data
    link.symlink_to(tiny_data)
    result = resumed(run, "--data", str(link))  # 1 of 1 epochs done: nothing to train
    assert result.exit_code == 0, result.output


def test_resume_of_a_run_whose_data_moved(tmp_path, tiny_data, trained_run):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    move_data_of(run, tmp_path / "gone.h5")
    line = error_line(resumed(run))
    assert "gone.h5: the data file this run was trained on no longer exists; pass it, moved or copied, with --data" in line
    moved = Path(shutil.copy(tiny_data, tmp_path / "moved.h5"))
    result = resumed(run, "--data", str(moved))
    assert result.exit_code == 0, result.output
    assert f"data: {moved}" in result.stderr


def test_resume_refuses_options_it_would_ignore(tmp_path, trained_run):
    run = Path(shutil.copytree(trained_run, tmp_path / "again"))
    line = error_line(resumed(run, "--epochs", "2", "--lr", "0.1", "--single"))
    assert "--lr" in line and "--single" in line and "not used with --resume" in line
    assert len(load_checkpoint(run / "last.pt")) and (run / "metrics.csv").read_text().count("\n") == 2  # untouched


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"name,value\nx,1\n"])
def test_a_damaged_metrics_csv_is_one_line(tmp_path, trained_run, content):
    run = Path(shutil.copytree(trained_run, tmp_path / "damaged"))
    (run / "metrics.csv").write_bytes(content)
    for command in (["train", "--resume", str(run), "--epochs", "2"], ["visualize", str(run), "--distances"]):
        line = error_line(runner.invoke(app, command))
        assert f"{run / 'metrics.csv'}: not a metrics.csv written by piro" in line
