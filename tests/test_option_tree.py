"""`piro train`'s options come from TrainConfig's fields (their OptionSpec): the same options as before the
fields carried them, and a new field is an option of the command line, of --config files and of config.json
and a label of `piro compare` without any other edit."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import typer
from typer.testing import CliRunner

import piro_cli.training.config_file as config_file
import piro_cli.training.trainer as trainer
from piro_cli.cli import app
from piro_cli.cli.common import handle_errors
from piro_cli.cli.options_doc import options_markdown
from piro_cli.cli.train import _with_config_options, train
from piro_cli.options import option
from piro_cli.training.config import TrainConfig, method_label

runner = CliRunner()
BEFORE = Path(__file__).parent / "data" / "train_options_before_config_tree.json"  # written by the hand-listed command
ADDED_SINCE = {"object_features", "ema_decay"}  # options added after the snapshot, each with its own tests
KEYS = ("opts", "secondary_opts", "default", "is_flag", "help", "rich_help_panel", "metavar", "show_default", "min", "max", "is_eager")


def test_train_has_the_options_it_had_when_they_were_listed_by_hand():
    """Every option of `piro train` (spelling, default, bounds, panel, help, type) as the hand-written signature
    had it; the snapshot was taken from that code before the options moved into TrainConfig's fields."""
    before = {row["name"]: row for row in json.loads(BEFORE.read_text())}
    command = typer.main.get_command(app).commands["train"]
    now = {p.name: p for p in command.params}
    assert sorted(now) == sorted([*before, *ADDED_SINCE])
    for name, row in before.items():
        param = now[name]
        assert {k: repr(getattr(param, k, None)) for k in KEYS} == {k: row[k] for k in KEYS}, name
        annotation = re.search(r"annotation=([^,]+(?:\[[^\]]*\])?),", repr(param.type_descriptor)).group(1)
        assert annotation == row["annotation"], name


def test_a_new_field_is_an_option_of_the_command_line_config_files_and_config_json(monkeypatch, tmp_path):
    """One field with an OptionSpec, nothing else: --help lists it in its panel, the command line and a --config file
    set it, TrainConfig checks its bounds, and the resolved config (what config.json holds) carries it."""
    extended = dataclasses.make_dataclass(
        "TrainConfig",
        [("dummy_proxies", int, option(3, "A dummy loss setting: proxies per dummy.", "Method and losses", bounds=(1, 9), label="dummy={}"))],
        bases=(TrainConfig,),
    )
    monkeypatch.setattr("piro_cli.training.config.TrainConfig", extended)
    monkeypatch.setattr(config_file, "TrainConfig", extended)
    seen = []

    def fake_train(config, reporter, **_):
        seen.append(config)
        return SimpleNamespace(epochs_done=0, stop_reason="test", seconds=0.0, best_path="b", last_path="l")

    monkeypatch.setattr(trainer, "train", fake_train)
    command = _with_config_options(handle_errors(train.__wrapped__))
    dummy_app = typer.Typer()
    dummy_app.command(name="train")(command)
    dummy_app.command(name="other")(lambda: None)  # two commands: `train` stays a subcommand
    shown = runner.invoke(dummy_app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "--dummy-proxies" in shown.output and "proxies per dummy" in shown.output
    assert shown.output.index("--dummy-proxies") > shown.output.index("Method and losses")
    listed = options_markdown(typer.main.get_command(dummy_app).commands["train"])
    assert "| `--dummy-proxies` | `3` | A dummy loss setting: proxies per dummy. |" in listed
    typed = runner.invoke(dummy_app, ["train", "--dummy-proxies", "5", "--name", "x"])
    assert typed.exit_code == 0, typed.output
    assert seen[-1].dummy_proxies == 5 and seen[-1].to_dict()["dummy_proxies"] == 5
    assert method_label(seen[-1].to_dict()) == "piro-dual+dummy=5"  # how `piro compare` labels the run
    assert method_label({**seen[-1].to_dict(), "dummy_proxies": 3}) == "piro-dual"  # the default names nothing
    (tmp_path / "c.yaml").write_text("dummy_proxies: 7\n")
    from_file = runner.invoke(dummy_app, ["train", "--config", str(tmp_path / "c.yaml"), "--name", "y"])
    assert from_file.exit_code == 0, from_file.output
    assert seen[-1].dummy_proxies == 7
    (tmp_path / "s.yaml").write_text("loss:\n  dummy_proxies: 8\n")  # in its panel's section of a config file
    from_section = runner.invoke(dummy_app, ["train", "--config", str(tmp_path / "s.yaml"), "--name", "z"])
    assert from_section.exit_code == 0, from_section.output
    assert seen[-1].dummy_proxies == 8
    refused = runner.invoke(dummy_app, ["train", "--dummy-proxies", "12"])
    assert refused.exit_code == 2 and "less than or equal to 9" in refused.output  # typer's range check, the same bounds
    (tmp_path / "bad.yaml").write_text("dummy_proxies: 12\n")
    refused = runner.invoke(dummy_app, ["train", "--config", str(tmp_path / "bad.yaml")])
    assert refused.exit_code == 1 and f"--config {tmp_path / 'bad.yaml'}: --dummy-proxies 12: must be from 1 to 9" in refused.output


def test_the_options_document_is_what_the_command_declares():
    """docs/TRAIN_OPTIONS.md is generated (`python -m piro_cli.cli.options_doc`); regenerate it when an option changes."""
    document = Path(__file__).parent.parent / "docs" / "TRAIN_OPTIONS.md"
    assert document.read_text() == options_markdown(typer.main.get_command(app).commands["train"])


def test_a_bad_value_names_the_field_as_its_caller_spells_it(tmp_path):
    """The library names a configuration field (`distance_margin`, as the Python API and config files spell it);
    the command line names its flag, and for a bad value from a --config file the file too."""
    import pytest

    from piro_cli.errors import OptionError

    with pytest.raises(OptionError, match=r"^distance_margin -1\.0: must be a finite number >= 0$"):
        TrainConfig(distance_margin=-1.0)
    with pytest.raises(OptionError, match=r"^train_from trains part of the backbone and freeze_backbone none of it"):
        TrainConfig(train_from="blocks.6", freeze_backbone=True)
    data = str(tmp_path / "none.h5")  # refused before the data is opened
    cases = {
        ("--distance-margin", "-1"): "error: --distance-margin -1.0: must be a finite number >= 0",
        ("--train-from", "blocks.6", "--freeze-backbone"): "error: --train-from trains part of the backbone and --freeze-backbone none of",
        ("--logger", "wandb"): "error: --logger 'wandb': choose one of tensorboard",
        ("--method", "mv-cnn", "--obj-loss", "triplet"): "error: --obj-loss triplet: the object-space loss is part of piro-dual",
    }
    for args, line in cases.items():
        result = runner.invoke(app, ["train", "--data", data, "--project", str(tmp_path / "runs"), *args])
        assert result.exit_code == 1 and " ".join(result.output.split()).startswith(line), (args, result.output)
    (tmp_path / "c.yaml").write_text("loss:\n  distance_margin: -1\n")
    result = runner.invoke(app, ["train", "--data", data, "--config", str(tmp_path / "c.yaml")])
    expected = f"error: --config {tmp_path / 'c.yaml'}: --distance-margin -1: must be a finite number >= 0"
    assert result.exit_code == 1 and " ".join(result.output.split()) == expected, result.output
