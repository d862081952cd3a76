"""Hostile and clumsy inputs to the readers of files piro did not write itself (issue #11).

Each test fails on the code before the fix: a data file must never run code, a changed data file must never
reuse stale cached features, and a broken or foreign file must be refused with one line naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.cli.common import err_console
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.errors import DataError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_error_console(monkeypatch):
    """No wrapping of the error line at the test console's 80 columns, so that one line stays one line."""
    monkeypatch.setattr(err_console, "width", 2000)


def one_error_line(result) -> str:
    """The CLI failed with exit 1 and printed one `error:` line (last), no traceback; returns that line."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    message = result.output[result.output.index("error:") :].strip()
    assert "\n" not in message, result.output
    return message


# ----------------------------------------------------------------------------- item 1: pickled *_o2c.npy


class _TouchOnUnpickle:
    """Unpickling this calls open(marker, 'w'): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def release_layout(root: Path, o2c: np.ndarray, allow_pickle: bool = False) -> Path:
    """A two-object PiRO release folder: train/<id>/<view>.jpg plus train_o2c.npy."""
    for obj in range(2):
        for view in range(2):
            write_image(root / "train" / str(obj) / f"{view}.jpg", obj * 10 + view, size=16)
    np.save(root / "train_o2c.npy", o2c, allow_pickle=allow_pickle)
    return root


def test_pickled_o2c_never_runs_code(tmp_path):
    marker = tmp_path / "code-ran"
    raw = release_layout(tmp_path / "release", np.array([_TouchOnUnpickle(marker), 0], dtype=object), allow_pickle=True)
    result = runner.invoke(app, ["prepare", "modelnet40", str(raw), "--out", str(tmp_path / "m.h5"), "--size", "16"])
    assert not marker.exists()
    line = one_error_line(result)
    assert "train_o2c.npy" in line and "pickled" in line and "np.save" in line and "dtype=np.int64" in line
    assert not (tmp_path / "m.h5").exists()


def test_pickled_dict_o2c_is_refused_with_how_to_resave(tmp_path):
    raw = release_layout(tmp_path / "release", {"0": 0, "1": 1}, allow_pickle=True)  # the 0-d object array np.save makes
    with pytest.raises(DataError, match=r"train_o2c.npy: holds pickled Python objects.*dtype=str"):
        prepare_dataset("modelnet40", raw, tmp_path / "m.h5", PrepareOptions(size=16))


def test_unicode_o2c_still_loads(tmp_path):
    raw = release_layout(tmp_path / "release", np.array(["chair", "bed"]))
    summary = prepare_dataset("modelnet40", raw, tmp_path / "m.h5", PrepareOptions(size=16))
    assert summary.categories == ["bed", "chair"] and summary.objects_per_split == {"train": 2}
