"""Messages for things users do (issue #30, items 9 and 10): each says what happened and what to do, in one line."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from conftest import write_image
from PIL import Image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.photos import read_photos
from piro_cli.data.sources.base import read_image
from piro_cli.errors import PiroError
from piro_cli.inference.released import convert_released_state_dict
from piro_cli.training import Trainer

runner = CliRunner()


def test_a_state_dict_with_an_integer_key_says_so():
    with pytest.raises(PiroError, match=r"key 5 is a int, not a parameter name"):
        convert_released_state_dict({5: torch.zeros(1)}, dual=True)
    with pytest.raises(PiroError, match=r"entry 'w' is a list, not a tensor"):
        convert_released_state_dict({"w": [1]}, dual=True)


def test_a_folder_or_a_fifo_given_as_a_photo(tmp_path):
    (tmp_path / "shelf").mkdir()
    with pytest.raises(PiroError, match="shelf: is a folder, not an image file"):
        read_photos([tmp_path / "shelf"], 32)
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(PiroError, match="pipe.jpg: is not a regular file"):
        read_photos([tmp_path / "pipe.jpg"], 32)
    with pytest.raises(PiroError, match="none.jpg: no such image file"):
        read_photos([tmp_path / "none.jpg"], 32)


def test_images_at_the_top_of_a_dataset_folder(tmp_path):
    for k in range(3):
        write_image(tmp_path / "raw" / f"{k}.jpg", k)
    result = runner.invoke(app, ["prepare", "folder", str(tmp_path / "raw"), "--out", str(tmp_path / "d.h5")])
    assert result.exit_code == 1
    assert "found: 3 images, no folders" in result.output and "<split>/<category>/<object>/" in result.output, result.output


def test_a_very_large_photo_is_read_without_pils_warning(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: over the warning limit, under the error's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path, 32).shape == (32, 32, 3)


@pytest.mark.parametrize("after_epochs", [0, 1])
def test_ctrl_c_in_training_says_how_to_resume(tiny_data, tmp_path, monkeypatch, after_epochs):
    original = Trainer.epoch
    calls = []

    def interrupted(self, epoch):
        calls.append(epoch)
        if len(calls) > after_epochs:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "epoch", interrupted)
    project = tmp_path / "runs"
    argv = ["train", "--data", str(tiny_data), "--project", str(project), "--name", "x", "--backbone", "tiny",
            "--no-pretrained", "--cat-dim", "16", "--obj-dim", "16", "--epochs", "3", "--pairs-per-object", "2",
            "--device", "cpu", "--early-stop-rho", "0"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 130
    if after_epochs:
        assert f"continue it with `piro train --resume {project / 'x'}`" in result.output, result.output
        assert (project / "x" / "last.pt").is_file()
    else:
        assert "no epoch was saved, so no run folder was kept" in result.output, result.output
        assert not (project / "x").exists()


def test_leftovers_of_killed_processes_go_at_the_next_write_in_their_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (folder / f".old.h5.tmp-{dead}").write_bytes(b"half")
    (folder / ".old.h5.lock").write_text(f"{dead}\n")
    (folder / "keep.txt").write_text("mine")
    (folder / ".db.lock").write_text("another program's\n")  # not piro's: stays
    (folder / ".live.lock").write_text(f"{os.getpid()}\n")  # a live process's: stays
    from piro_cli.outputs import write_text

    write_text("new", folder / "other.json")
    assert sorted(p.name for p in folder.iterdir()) == [".db.lock", ".live.lock", "keep.txt", "other.json"]
