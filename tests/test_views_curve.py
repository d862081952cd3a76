"""`piro evaluate --views-curve` and `piro visualize --views` on tiny trained runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.evaluation.views_curve import TASKS, _subsets, views_curve
from piro_cli.training import train

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    project = tmp_path_factory.mktemp("views") / "runs"
    return [
        train(tiny_config(tiny_data, project=str(project), name=name, dual=dual, freeze_backbone=True, feature_passes=1)).run_dir
        for name, dual in (("dual", True), ("single", False))
    ]


def test_all_views_give_the_mv_tasks_of_evaluate(runs, tiny_data):
    """k = V (category) and k = V - V//2 (object) are today's MV tasks: the same numbers as `piro evaluate`."""
    curve = views_curve(runs[0], data=tiny_data, draws=3, save=False)
    values = evaluate([runs[0]], data=tiny_data, tasks=list(TASKS), save=False).runs[0].values
    v = curve.num_views
    assert list(curve.points[TASKS[0]]) == list(range(1, v + 1))
    assert list(curve.points[TASKS[1]]) == list(range(1, v - v // 2 + 1))
    assert curve.mean(TASKS[0])[v] == pytest.approx(values[TASKS[0]])
    assert curve.mean(TASKS[1])[v - v // 2] == pytest.approx(values[TASKS[1]])
    assert all(0 <= x <= 100 for task in TASKS for x in curve.mean(task).values())


def test_subsets_are_distinct_views():
    rng = np.random.default_rng(0)
    subset = _subsets(50, 12, 5, rng)
    assert subset.shape == (50, 5) and all(len(set(row)) == 5 for row in subset.tolist()) and subset.max() < 12
    assert len({tuple(sorted(row)) for row in subset.tolist()}) > 10  # random, not the same views for every object


def test_cli_curve_then_figure_of_two_runs(runs, tiny_data):
    result = runner.invoke(app, ["evaluate", *map(str, runs), "--data", str(tiny_data), "--views-curve", "--draws", "2"],
                           env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "accuracy (%) against query views" in result.output
    saved = json.loads((runs[0] / "views_test.json").read_text())
    assert set(saved["tasks"]) == set(TASKS) and saved["draws"] == 2
    assert (runs[0] / "views_test.csv").read_text().startswith("task,k,mean,std,draws")
    figure = runner.invoke(app, ["visualize", *map(str, runs), "--views"])
    assert figure.exit_code == 0, figure.output
    png = runs[0] / f"views_{runs[0].name}_vs_{runs[1].name}.png"
    assert png.stat().st_size > 5000


def test_views_figure_without_a_curve_says_how(tiny_data, tmp_path):
    run = train(tiny_config(tiny_data, project=str(tmp_path / "runs"), name="none", freeze_backbone=True, feature_passes=1, epochs=1))
    result = runner.invoke(app, ["visualize", str(run.run_dir), "--views"])
    assert result.exit_code == 1 and "--views-curve" in result.output
    result = runner.invoke(app, ["evaluate", str(run.run_dir), "--views-curve", "--draws", "0"])
    assert result.exit_code != 0 and "--draws" in result.output
