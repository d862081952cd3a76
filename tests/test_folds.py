"""Object-level K-fold validation (`piro train --folds K`): the folds are disjoint, cover every object, are
stratified by category, and `--folds K` alone trains every fold and compares them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.data.samplers import fold_validation
from piro_cli.errors import DataError


def test_folds_partition_the_objects_by_category():
    categories = np.repeat(np.arange(4), [5, 6, 2, 10])
    seen = []
    for k in range(1, 4):
        train, val = fold_validation(categories, 3, k, seed=7)
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(categories)))  # each object once per fold
        for c, n in zip(range(4), [5, 6, 2, 10], strict=True):  # every category spread evenly: n // 3 or n // 3 + 1
            assert n // 3 <= int(np.sum(categories[val] == c)) <= -(-n // 3)
        seen.append(set(val.tolist()))
    assert set().union(*seen) == set(range(len(categories))) and sum(len(s) for s in seen) == len(categories)
    assert (fold_validation(categories, 3, 2, seed=7)[1] == fold_validation(categories, 3, 2, seed=7)[1]).all()
    with pytest.raises(DataError, match="--fold 4"):
        fold_validation(categories, 3, 4, seed=0)


def test_train_folds_alone_trains_every_fold_and_compares_them(tmp_path):
    data = tmp_path / "s.h5"
    prepare_dataset("synthetic", None, data, PrepareOptions(size=32), {"seed": 0, "categories": 3, "objects_per_category": 6})
    argv = [
        "train", "--data", str(data), "--project", str(tmp_path / "runs"), "--name", "cv", "--backbone", "tiny",
        "--no-pretrained", "--cat-dim", "8", "--obj-dim", "8", "--epochs", "1", "--pairs-per-object", "1", "--lr", "1e-3",
        "--device", "cpu", "--early-stop-rho", "0", "--folds", "3",
    ]  # fmt: skip
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "piro-dual" in result.output and "3" in result.output  # the table of the three folds
    assert "warning" not in result.output  # folds share a seed and differ in the fold: one method, no repeated run
    folds = [json.loads((tmp_path / "runs" / f"cv-fold{k}" / "config.json").read_text()) for k in (1, 2, 3)]
    assert [f["train"]["fold"] for f in folds] == [1, 2, 3]
    bad = CliRunner().invoke(app, [*argv[:-2], "--fold", "2"])
    assert bad.exit_code == 1 and "--fold k and --folds K go together" in bad.output
