"""`piro compare`: runs grouped by method, mean and std over seeds, best per column; on tiny real runs."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import DataError, PiroError
from piro_cli.evaluation.compare import COLUMNS, Comparison, MethodGroup, RunValues, compare_runs, out_format
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.retrieval.picr import SHORT_NAMES, TASKS
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, train
from piro_cli.training.config import method_label

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


def synthetic(path: Path, objects: int = 5) -> Path:
    options = {"seed": 0, "categories": 3, "objects_per_category": objects, "test_fraction": 0.2}
    prepare_dataset("synthetic", None, path, PrepareOptions(size=32), options)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny runs under <root>/runs: dual seeds 0 and 1, single seed 0 (25% of train held out for validation);
    one without validation objects, two holding out other validation objects, one on other data."""
    root = tmp_path_factory.mktemp("compare")
    data, other = synthetic(root / "synthetic.h5"), synthetic(root / "other.h5", objects=4)

    def run(name: str, data_file: Path = data, **overrides) -> Path:
        values = dict(
            data=str(data_file), project=str(root / "runs"), name=name, backbone="tiny", pretrained=False, cat_dim=16,
            obj_dim=16, epochs=2, batch_pairs=4, pairs_per_object=2, lr=1e-3, seed=0, device="cpu", early_stop_rho=0.0,
            freeze_backbone=True, feature_passes=1, val_fraction=0.25,
        )  # fmt: skip
        values.update(overrides)
        return train(TrainConfig(**values)).run_dir

    runs = {
        "dual0": run("dual0"),
        "dual1": run("dual1", seed=1),
        "single0": run("single0", dual=False),
        "noval": run("noval", epochs=1, val_fraction=None),
        "half": run("half", epochs=1, val_fraction=0.5),
        "valseed": run("valseed", epochs=1, seed=1, val_seed=3),
        "other": run("other", other, epochs=1),
    }
    return {"root": root, "data": data, "runs": runs}


def invoke(argv: list) -> object:
    result = runner.invoke(app, [str(a) for a in argv], env=WIDE)
    assert "Traceback" not in result.output
    return result


def recorded(run_dir: Path) -> dict[str, float]:
    metrics = load_checkpoint(run_dir)["metrics"]
    return {t: metrics[f"val_{t}"] for t in TASKS}


def test_groups_by_method_with_mean_and_std_of_the_recorded_numbers(world):
    runs = world["runs"]
    comparison = compare_runs([runs["dual0"], runs["single0"], runs["dual1"]])
    assert comparison.recorded and comparison.split == "val"
    dual, single = (method_label(load_checkpoint(runs[n])["train_config"]) for n in ("dual0", "single0"))
    assert (dual, single) == ("piro-dual", "piro-single")
    assert [g.method for g in comparison.groups] == [dual, single]  # order of first appearance
    group = comparison.groups[0]
    assert group.n == 2 and group.seeds == [0, 1] and [r.name for r in group.runs] == ["dual0", "dual1"]
    values = [recorded(runs["dual0"]), recorded(runs["dual1"])]
    for task in TASKS:
        column = [v[task] for v in values]
        assert group.mean[task] == pytest.approx(np.mean(column))
        assert group.std[task] == pytest.approx(np.std(column, ddof=1))
    run_means = [np.mean(list(v.values())) for v in values]
    assert group.mean["mean"] == pytest.approx(np.mean(run_means))
    assert group.std["mean"] == pytest.approx(np.std(run_means, ddof=1))
    single_group = comparison.groups[1]
    assert single_group.mean == pytest.approx(
        {**recorded(runs["single0"]), "mean": np.mean(list(recorded(runs["single0"]).values()))}
    )
    assert all(math.isnan(v) for v in single_group.std.values())  # one run: no standard deviation
    for run in comparison.runs:  # training time: the sum of metrics.csv "seconds"; epoch: the checkpoint's
        with (Path(run.checkpoint).parent / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert run.train_seconds == pytest.approx(sum(float(r["seconds"]) for r in rows))
        assert run.epochs_trained == 2 and run.epoch == load_checkpoint(run.checkpoint)["epoch"]
    seconds = [r.train_seconds for r in group.runs]
    assert group.train_seconds == pytest.approx((np.mean(seconds), np.std(seconds, ddof=1)))
    # a checkpoint file works like its run folder; the shared feature cache (matched by runs/*) is skipped
    assert (world["root"] / "runs" / "feature-cache").is_dir()
    again = compare_runs([runs["dual0"] / "best.pt", world["root"] / "runs" / "feature-cache", runs["dual1"]])
    assert again.groups[0].mean == pytest.approx(group.mean)


def fake(method: str, *rows: tuple[float, ...]) -> MethodGroup:
    """A group whose runs have the given task values (one tuple of eight per run)."""
    runs = [
        RunValues(
            f"runs/{method}{i}",
            f"runs/{method}{i}/best.pt",
            f"{method}{i}",
            method,
            i,
            3,
            5,
            10.0 + i,
            dict(zip(TASKS, row, strict=True)),
        )
        for i, row in enumerate(rows)
    ]
    return MethodGroup(method, runs)


@pytest.fixture
def made_up() -> Comparison:
    a = fake("mv-cnn", (50, 60, 70, 80, 40, 50, 60, 70), (52, 60, 70, 80, 42, 50, 60, 72))
    b = fake("piro-dual", (55, 59, 70, 85, 41, 49, 61, 72))
    return Comparison([a, b], "val", True)


def test_markdown_bolds_the_best_mean_per_column(made_up):
    lines = made_up.markdown().splitlines()
    assert lines[0] == made_up.title and lines[1] == ""
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["method", "n", *(SHORT_NAMES[t] for t in TASKS), "mean", "train time (s)"]
    cnn, dual = ([c.strip() for c in line.strip("|").split("|")] for line in lines[4:6])
    assert cnn[:4] == ["mv-cnn", "2", "51.00 ± 1.41", "**60.00 ± 0.00**"]
    assert dual[:4] == ["piro-dual", "1", "**55.00**", "59.00"]  # one run: no ± std
    best = {
        c: [g for g, row in (("mv-cnn", cnn), ("piro-dual", dual)) if row[2 + i].startswith("**")] for i, c in enumerate(COLUMNS)
    }
    assert best == made_up.best()
    assert best["sv-object-recognition"] == ["mv-cnn", "piro-dual"]  # a tie: both bold
    assert best["mean"] == ["piro-dual"] and dual[10] == "**61.50**"
    assert cnn[-1] == "10.5 ± 0.7" and dual[-1] == "10.0"  # training time, never bold


def test_csv_and_json(made_up):
    rows = list(csv.DictReader(io.StringIO(made_up.csv())))
    assert [r["method"] for r in rows] == ["mv-cnn", "piro-dual"]
    assert rows[0]["n"] == "2" and rows[0]["seeds"] == "0 1"
    assert float(rows[0]["sv-category-recognition_mean"]) == 51.0
    assert float(rows[0]["sv-category-recognition_std"]) == pytest.approx(np.std([50, 52], ddof=1), abs=1e-4)
    assert rows[1]["sv-category-recognition_std"] == "" and float(rows[1]["mean_mean"]) == pytest.approx(61.5)
    assert float(rows[0]["train_seconds_mean"]) == 10.5 and float(rows[0]["epoch_mean"]) == 3
    assert not any("**" in v for r in rows for v in r.values())
    data = made_up.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["best"] == made_up.best() and data["columns"] == list(COLUMNS)
    cnn, dual = data["groups"]
    assert dual["std"]["mean"] is None and cnn["std"]["mean"] == pytest.approx(made_up.groups[0].std["mean"])
    assert [r["tasks"]["sv-category-recognition"] for r in cnn["runs"]] == [50, 52] and cnn["seeds"] == [0, 1]
    assert json.loads(made_up.render("json")) == data


def test_out_format():
    assert out_format(None, "table") is None
    assert out_format("t.md", "table") == "markdown" and out_format("t.CSV", "table") == "csv"
    assert out_format("t.txt", "markdown") == "markdown" and out_format("t.json", "json") == "json"
    with pytest.raises(PiroError, match=r"\.md, \.csv or \.json"):
        out_format("t.txt", "table")
    with pytest.raises(PiroError, match="says json but --format is csv"):
        out_format("t.json", "csv")
    with pytest.raises(PiroError, match="--format 'html'"):
        out_format(None, "html")


def test_cli_compare_as_typed(world):
    Path("runs").symlink_to(world["root"] / "runs")
    result = invoke(["compare", "runs/dual0", "runs/dual1", "runs/single0", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout == compare_runs(["runs/dual0", "runs/dual1", "runs/single0"]).markdown()
    assert "| piro-dual | 2 |" in result.stdout and "| piro-single | 1 |" in result.stdout
    table = invoke(["compare", "runs/dual0", "runs/dual1", "runs/single0", "--out", "table.csv"])
    assert table.exit_code == 0, table.output
    assert "piro-dual" in table.stdout and "2 runs" in table.stdout and "wrote table.csv" in table.output
    assert [r["method"] for r in csv.DictReader(Path("table.csv").open())] == ["piro-dual", "piro-single"]
    as_json = invoke(["compare", "runs/dual0", "runs/single0", "-f", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert [g["method"] for g in json.loads(as_json.stdout)["groups"]] == ["piro-dual", "piro-single"]
    help_text = invoke(["compare", "--help"]).output
    for option in ("--split", "--data", "--format", "--out", "--device"):
        assert option in help_text


def test_split_test_re_evaluates_every_checkpoint(world):
    runs = [world["runs"]["dual0"], world["runs"]["noval"]]  # a run without validation numbers is fine here
    messages = []

    class Reporter:
        def info(self, message: str) -> None:
            messages.append(message)

        def progress(self, stage: str, done: int, total: int) -> None:
            pass

    comparison = compare_runs(runs, split="test", data=world["data"], reporter=Reporter())
    assert not comparison.recorded and comparison.split == "test"
    # noval trained 1 epoch, dual0 2: two methods (how the validation objects were carved is not a method)
    assert [(g.method, g.n) for g in comparison.groups] == [("piro-dual+epochs=2", 1), ("piro-dual+epochs=1", 1)]
    expected = evaluate(runs, data=world["data"], save=False)
    assert [r.values for r in comparison.runs] == [r.values for r in expected.runs]
    assert not list(world["runs"]["dual0"].glob("eval_*"))  # nothing saved into the run folders
    assert not messages or all("warning" not in m for m in messages)


def test_runs_that_differ_in_a_training_option_are_different_methods(world):
    runs = world["runs"]
    comparison = compare_runs([runs["dual0"], runs["dual1"], runs["half"]], split="test", data=world["data"])
    # dual0 and dual1 differ in the seed only: one method; half trained 1 epoch on other carved objects: its own
    assert [(g.method, g.n) for g in comparison.groups] == [("piro-dual+epochs=2", 2), ("piro-dual+epochs=1", 1)]
    assert [g.method for g in compare_runs([runs["dual0"], runs["dual1"]]).groups] == ["piro-dual"]  # nothing differs


def test_runs_on_files_of_the_same_objects_at_other_sizes_compare(world, tmp_path):
    """A run trained on the same objects prepared at another image size (as a larger backbone wants) is compared,
    each run evaluated on its own file; --data is refused for such a mix, and other objects still are."""
    bigger = tmp_path / "synthetic-48.h5"
    options = {"seed": 0, "categories": 3, "objects_per_category": 5, "test_fraction": 0.2}
    prepare_dataset("synthetic", None, bigger, PrepareOptions(size=48), options)
    assert ViewSetStore(bigger).objects_fingerprint == ViewSetStore(world["data"]).objects_fingerprint
    assert ViewSetStore(bigger).fingerprint != ViewSetStore(world["data"]).fingerprint
    big = train(TrainConfig(
        data=str(bigger), project=str(tmp_path / "runs"), name="big", backbone="tiny", pretrained=False, cat_dim=16,
        obj_dim=16, epochs=2, batch_pairs=4, pairs_per_object=2, lr=1e-3, seed=0, device="cpu", early_stop_rho=0.0,
        freeze_backbone=True, feature_passes=1, val_fraction=0.25,
    )).run_dir  # fmt: skip
    comparison = compare_runs([world["runs"]["dual0"], big], split="test")
    assert [g.method for g in comparison.groups] == ["piro-dual+image_size=32", "piro-dual+image_size=48"]
    expected = evaluate([big], save=False)  # on its own 48-px file
    assert comparison.groups[1].runs[0].values == expected.runs[0].values
    with pytest.raises(DataError, match=r"--data .*different files of the same objects"):
        compare_runs([world["runs"]["dual0"], big], split="test", data=world["data"])
    with pytest.raises(DataError, match=r"other was trained on other data.*not hold the same objects"):
        compare_runs([big, world["runs"]["other"]], split="test")


def test_clear_errors(world):
    runs = world["runs"]
    Path("runs/empty").mkdir(parents=True)
    with pytest.raises(PiroError, match="runs/empty: no best.pt"):
        compare_runs(["runs/empty"])
    with pytest.raises(PiroError, match=r"noval/best.pt: the run recorded no validation numbers.*--split test.*--val-fraction"):
        compare_runs([runs["dual0"], runs["noval"]])
    with pytest.raises(DataError, match=r"other was trained on other data than .*dual0.*fingerprints differ"):
        compare_runs([runs["dual0"], runs["other"]])
    with pytest.raises(DataError, match=r"other was trained on other data"):  # re-evaluating does not make them comparable
        compare_runs([runs["dual0"], runs["other"]], split="test")
    with pytest.raises(DataError, match=r"half and .*dual0 were validated on different objects"):
        compare_runs([runs["dual0"], runs["half"]])
    assert load_checkpoint(runs["valseed"])["data"]["val"]["indices"] != load_checkpoint(runs["dual1"])["data"]["val"]["indices"]
    with pytest.raises(DataError, match=r"valseed and .*dual1 were validated on different objects.*--split test.*--val-seed"):
        compare_runs([runs["dual1"], runs["valseed"]])
    with pytest.raises(DataError, match=r"valseed and .*dual1 were validated on different objects"):
        compare_runs([runs["dual1"], runs["valseed"]], split="val")
    with pytest.raises(PiroError, match="given twice"):
        compare_runs([runs["dual0"], runs["dual0"] / "best.pt"])
    with pytest.raises(PiroError, match="--data is used only to re-evaluate"):
        compare_runs([runs["dual0"]], data=world["data"])
    cli = invoke(["compare", "runs/empty"])
    assert cli.exit_code == 1 and "no best.pt" in cli.output


def test_a_narrow_terminal_keeps_the_method_names(monkeypatch):
    """Below 80 columns the comparison is printed as one block per method, a task a line, never without its name."""
    from types import SimpleNamespace

    from rich.console import Console

    import piro_cli.cli.compare as cli_compare

    narrow = Console(width=60, record=True)
    monkeypatch.setattr(cli_compare, "console", narrow)
    header = ["method", "n", "SV cat acc", "mean"]
    rows = [("piro-dual", ["piro-dual", "3", "74.83 ± 1.11", "86.08 ± 0.62"], [False, False, True, True])]
    cli_compare.print_comparison_table(SimpleNamespace(table=lambda: (header, rows), title="PICR tasks"))
    text = narrow.export_text()
    assert "piro-dual (3 runs)" in text and "SV cat acc: 74.83 ± 1.11" in text and "mean: 86.08 ± 0.62" in text


def test_a_runs_own_test_time_setting_splits_methods_only_where_it_is_used(world, tmp_path):
    """`--tta` as a training option is how a run embeds by default: it tells methods apart when compare re-evaluates
    with each run's own setting, not for the recorded numbers (never with flips) nor under an explicit --tta."""
    flipped = train(TrainConfig(
        data=str(world["data"]), project=str(tmp_path / "runs"), name="flipped", backbone="tiny", pretrained=False,
        cat_dim=16, obj_dim=16, epochs=2, batch_pairs=4, pairs_per_object=2, lr=1e-3, seed=1, device="cpu",
        early_stop_rho=0.0, freeze_backbone=True, feature_passes=1, val_fraction=0.25, tta=True,
    )).run_dir  # fmt: skip
    runs = [world["runs"]["dual0"], flipped]
    assert [g.n for g in compare_runs(runs).groups] == [2]
    assert [g.n for g in compare_runs(runs, split="val", tta=False).groups] == [2]
    own = compare_runs(runs, split="val")
    assert [g.method for g in own.groups] == ["piro-dual+tta=False", "piro-dual+tta=True"]


def test_a_run_from_before_an_option_is_the_same_method_as_one_that_records_its_default(world, tmp_path):
    """An older checkpoint lacks the options added since: a default it could only have trained with (e.g.
    --ema-decay 0) is no difference, and one whose earlier value is unknown (e.g. --precision) tells nothing apart."""
    older = load_checkpoint(world["runs"]["dual1"] / "best.pt")
    assert older["arithmetic"] == "fp32"  # --precision auto on a CPU, recorded since
    for key in ("ema_decay", "object_features", "precision"):
        older["train_config"].pop(key)
    older.pop("arithmetic")
    path = tmp_path / "older" / "best.pt"
    path.parent.mkdir()
    torch.save({k: v for k, v in older.items() if k != "path"}, path)
    comparison = compare_runs([world["runs"]["dual0"], path])
    assert [(g.method, g.n) for g in comparison.groups] == [("piro-dual", 2)]
    older["train_config"]["precision"] = "auto"  # recorded, but not what it became on the run's device
    torch.save({k: v for k, v in older.items() if k != "path"}, path)
    assert [(g.method, g.n) for g in compare_runs([world["runs"]["dual0"], path]).groups] == [("piro-dual", 2)]
    older["arithmetic"] = "bf16"  # what a run on a GPU records: another arithmetic is another method
    torch.save({k: v for k, v in older.items() if k != "path"}, path)
    assert [g.method for g in compare_runs([world["runs"]["dual0"], path]).groups] == ["piro-dual+precision=fp32", "piro-dual+precision=bf16"]
    older.pop("arithmetic")
    older["train_config"]["ema_decay"] = 0.5  # a real difference still is one
    torch.save({k: v for k, v in older.items() if k != "path"}, path)
    assert [g.method for g in compare_runs([world["runs"]["dual0"], path]).groups] == ["piro-dual", "piro-dual+ema=0.5"]
