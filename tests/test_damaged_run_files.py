"""Run folders whose files were edited or damaged by hand (issue #30): one clean line or a graceful fallback,
never a traceback. Each case failed with a traceback before its fix."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_config
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.training import train

runner = CliRunner()
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    config = tiny_config(tiny_data, project=str(root / "runs"), name="base", epochs=1, val_fraction=0.25, loggers=("tensorboard",))
    return train(config).run_dir


def copy_of(run: Path, name: str) -> Path:
    target = Path(name)
    shutil.copytree(run, target)
    return target


def invoke(argv) -> str:
    result = runner.invoke(app, [str(a) for a in argv], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.output


def test_compare_with_a_non_numeric_seconds_column(run):
    edited = copy_of(run, "b")
    rows = list(csv.DictReader(open(edited / "metrics.csv")))
    for row in rows:
        row["seconds"] = "abc"
    with open(edited / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    output = invoke(["compare", run, edited])
    assert "piro-dual" in output


@pytest.mark.parametrize("text", ["[1, 2]", json.dumps({"model": "x", "train": 5}), DEEP])
def test_distances_figure_with_an_edited_config_json(run, tiny_data, text):
    edited = copy_of(run, "c")
    (edited / "config.json").write_text(text)
    output = invoke(["visualize", edited, "--distances", "--data", tiny_data])
    assert (edited / "distances.png").is_file(), output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["tasks"].update(bogus=c["tasks"]["mv-object-recognition"]), "unknown task 'bogus'"),
        (lambda c: c["tasks"]["mv-object-recognition"].update(mean=["a"] * len(c["tasks"]["mv-object-recognition"]["mean"])), "must be numbers"),
        (lambda c: c["tasks"]["mv-object-recognition"].update(k=[0.5]), "k and mean must be lists of the same length"),
        (None, "nested too deeply"),
    ],
)
def test_views_figure_with_an_edited_curve(run, tiny_data, change, message):
    edited = copy_of(run, "v")
    invoke(["evaluate", edited, "--views-curve", "--data", tiny_data, "--draws", "1"])
    path = edited / "views_test.json"
    if change is None:
        path.write_text(DEEP)
    else:
        curve = json.loads(path.read_text())
        change(curve)
        path.write_text(json.dumps(curve))
    output = invoke(["visualize", edited, "--views"])
    assert message in output and "write it again with --views-curve" in output, output


def test_resume_with_the_tensorboard_folder_replaced_by_a_file(run):
    edited = copy_of(run, "t")
    shutil.rmtree(edited / "tensorboard")
    (edited / "tensorboard").write_text("")
    output = invoke(["train", "--resume", edited, "--epochs", "2"])
    assert "is a file, where the run's TensorBoard events go" in output


def test_resume_with_the_tensorboard_logger_finishes(run):
    # the earlier epochs come back from metrics.csv as text; the best-epoch table compared text with numbers
    edited = copy_of(run, "r")
    output = invoke(["train", "--resume", edited, "--epochs", "2"])
    assert "done: 2 epochs" in output, output
