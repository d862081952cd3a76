"""Training on 2 processes (torch.distributed, gloo on the CPU) against 1 process with the same global batch, config
files and the tensorboard logger."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.errors import PiroError
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, train
from piro_cli.training.config_file import read_config_file
from piro_cli.training.distributed import Processes

runner = CliRunner()

# dropout 0: its masks are drawn per process, so only without it can the two runs match to float tolerance
TINY = [
    "--backbone", "tiny", "--no-pretrained", "--cat-dim", "16", "--obj-dim", "16", "--epochs", "2", "--batch-pairs", "5",
    "--pairs-per-object", "2", "--lr", "1e-3", "--seed", "0", "--device", "cpu", "--early-stop-rho", "0", "--freeze-backbone",
    "--feature-passes", "1", "--val-fraction", "0.25", "--dropout", "0",
]  # fmt: skip


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    """The same run on 1 process and, through `piro train --devices 2` (torchrun), on 2."""
    project = tmp_path_factory.mktemp("distributed") / "runs"
    one = runner.invoke(app, ["train", "--data", str(tiny_data), "--project", str(project), "--name", "one", *TINY])
    assert one.exit_code == 0, one.output
    command = [sys.executable, "-m", "piro_cli", "train", "--devices", "2", "--data", str(tiny_data), "--project", str(project)]
    two = subprocess.run([*command, "--name", "two", *TINY], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    return project, two.stdout + two.stderr


def test_two_processes_write_one_complete_run_folder(two_runs):
    project, output = two_runs
    assert sorted(p.name for p in project.iterdir()) == ["feature-cache", "one", "two"]
    files = sorted(p.name for p in (project / "two").iterdir())
    assert files == ["best.pt", "config.json", "last.pt", "metrics.csv"]
    assert len(rows(project / "two")) == 2
    assert "2 processes (gloo)" in output
    assert output.count("run folder:") == 1  # process 0 alone reports


def test_two_processes_optimise_what_one_does_with_the_global_batch(two_runs):
    project, _ = two_runs
    one, two = rows(project / "one"), rows(project / "two")
    for key in ("loss", "loss_cat", "loss_piobj", "loss_picat", "val_mean"):
        assert float(two[0][key]) == pytest.approx(float(one[0][key]), rel=1e-5, abs=1e-6), key
    # the weights after 2 epochs: the same steps, up to float summation order. Not the attention layers' key biases:
    # adding b to every key adds q.b to a whole row of logits, which softmax ignores, so their true gradient is 0 and
    # Adam turns the rounding noise in it into full-size steps of either sign
    a, b = load_checkpoint(project / "one" / "last.pt"), load_checkpoint(project / "two" / "last.pt")
    compared = [name for name in a["model_state"] if not name.endswith("attention.k.bias")]
    assert len(compared) > 10
    for name in compared:
        assert torch.allclose(a["model_state"][name], b["model_state"][name], atol=1e-4), name


def test_a_two_process_run_resumes_in_one_process(two_runs, tmp_path):
    project, _ = two_runs
    result = train(TrainConfig(), resume=project / "two", resume_epochs=3)
    assert result.epochs_done == 3 and [int(r["epoch"]) for r in rows(project / "two")] == [1, 2, 3]


def test_a_two_process_run_resumed_on_two_continues_every_process_augmentation(tiny_data, tmp_path):
    """Full fine-tuning with augmentation (each process draws its own augmentations): 2 epochs then a resume to 3
    gives the weights of 3 uninterrupted epochs, which needs each process to continue its own augmentation stream."""
    finetune = [arg for arg in TINY if arg not in ("--freeze-backbone", "--feature-passes", "1")]
    finetune = [*finetune, "--augment"]
    base = [sys.executable, "-m", "piro_cli", "train", "--devices", "2", "--data", str(tiny_data), "--project", str(tmp_path)]
    for name, epochs in (("straight", "3"), ("resumed", "2")):
        done = subprocess.run([*base, "--name", name, *finetune, "--epochs", epochs], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    resume = [sys.executable, "-m", "piro_cli", "train", "--devices", "2", "--resume", str(tmp_path / "resumed"), "--epochs", "3"]
    done = subprocess.run(resume, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert b["epoch"] == 3 and len(b["rng"]["augment_by_rank"]) == 2
    compared = [name for name in a["model_state"] if not name.endswith("attention.k.bias")]  # see the test above
    for name in compared:
        assert torch.allclose(a["model_state"][name], b["model_state"][name], atol=1e-5), name


def _processes_with(variables: dict[str, str]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = set((entry / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if all(f"{k}={v}".encode() in environ for k, v in variables.items()):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_training_process_gives_one_line_and_the_run_resumes(tiny_data, tmp_path):
    import os
    import signal
    import time
    import uuid

    mark = uuid.uuid4().hex
    project = tmp_path / "runs"
    command = [sys.executable, "-m", "piro_cli", "train", "--devices", "2", "--data", str(tiny_data), "--project", str(project),
               "--name", "k", *TINY[:TINY.index("--epochs")], "--epochs", "500", *TINY[TINY.index("--epochs") + 2 :]]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PIRO_TEST_MARK": mark})
    try:
        deadline = time.time() + 120
        while not (project / "k" / "last.pt").is_file() and time.time() < deadline:
            time.sleep(0.5)
        workers = _processes_with({"PIRO_TEST_MARK": mark, "LOCAL_RANK": "1"})
        assert workers, "no worker of rank 1 found"
        os.kill(workers[0], signal.SIGKILL)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode != 0
    assert "Traceback" not in output and "ChildFailedError" not in output, output
    assert "training process 1 of 2 was killed (SIGKILL)" in output, output
    # the launcher's own line says how to resume: process 0 may be stopped before it can
    killed_line = output.replace("\n", "").split("training process 1 of 2 was killed")[1]
    assert f"piro train --resume {project / 'k'}" in killed_line, output
    resumed = runner.invoke(app, ["train", "--resume", str(project / "k"), "--epochs", str(len(rows(project / "k")) + 1)])
    assert resumed.exit_code == 0, resumed.output


def test_shares_cover_every_item_once():
    for count in range(0, 12):
        for world in (1, 2, 3, 5):
            shares = [Processes(rank, world).share(count) for rank in range(world)]
            covered = [i for s in shares for i in range(count)[s]]
            assert covered == list(range(count)), (count, world)


def test_devices_1_trains_in_this_process(tiny_data):
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--devices", "1", *TINY])
    # one process: trains as without the option
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- config files


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_a_config_file_sets_options_and_the_command_line_overrides_it(tiny_data, tmp_path, suffix):
    text = {
        ".yaml": "backbone: tiny\npretrained: false\nembed-dim: 16\nepochs: 1\nbatch_pairs: 3\nlr: 0.002\nlosses: cat,piobj\n",
        ".toml": 'backbone = "tiny"\npretrained = false\nembed-dim = 16\nepochs = 1\nbatch_pairs = 3\nlr = 0.002\nlosses = ["cat", "piobj"]\n',
        ".json": json.dumps({"backbone": "tiny", "pretrained": False, "embed-dim": 16, "epochs": 1, "batch_pairs": 3, "lr": 0.002,
                             "losses": "cat,piobj"}),
    }[suffix]  # fmt: skip
    path = tmp_path / f"options{suffix}"
    path.write_text(text)
    project = tmp_path / "runs"
    argv = ["train", "--config", path, "--data", tiny_data, "--project", project, "--name", "c", "--lr", "0.003"]
    argv += ["--freeze-backbone", "--feature-passes", "1", "--device", "cpu", "--pairs-per-object", "1"]
    result = runner.invoke(app, [str(a) for a in argv])
    assert result.exit_code == 0, result.output
    saved = json.loads((project / "c" / "config.json").read_text())["train"]
    assert saved["backbone"] == "tiny" and saved["cat_dim"] == saved["obj_dim"] == 16 and saved["batch_pairs"] == 3
    assert saved["losses"] == ["cat", "piobj"] and saved["lr"] == 0.003  # typed on the command line: it wins


FLAT = "backbone: tiny\npretrained: false\nembed-dim: 16\nepochs: 1\nbatch_pairs: 3\nlr: 0.002\nviews: 2\nseed: 4\nloggers: []\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("s.yaml", "model:\n  backbone: tiny\n  pretrained: false\n  embed-dim: 16\noptim:\n  epochs: 1\n  batch_pairs: 3\n"
                   "  lr: 0.002\n  seed: 4\ndata:\n  views: 2\nrun:\n  loggers: []\n"),
        ("s.toml", '[model]\nbackbone = "tiny"\npretrained = false\nembed-dim = 16\n[optim]\nepochs = 1\nbatch_pairs = 3\n'
                   'lr = 0.002\nseed = 4\n[data]\nviews = 2\n[run]\nloggers = []\n'),
        ("s.json", json.dumps({"model.backbone": "tiny", "model.pretrained": False, "model.embed_dim": 16, "optim": {"epochs": 1},
                               "optim.batch-pairs": 3, "optim.lr": 0.002, "optim.seed": 4, "data.views": 2, "run.loggers": []})),
    ],
)  # fmt: skip
def test_a_config_file_in_sections_reads_as_the_same_options_written_flat(tmp_path, name, text):
    """Sections (YAML mappings, TOML tables, dotted keys) name the same options as the flat keys every earlier
    file uses: the two files give one configuration."""
    (tmp_path / "flat.yaml").write_text(FLAT)
    (tmp_path / name).write_text(text)
    assert read_config_file(tmp_path / name) == read_config_file(tmp_path / "flat.yaml")


def test_a_runs_config_json_trains_it_again(two_runs, tmp_path):
    project, _ = two_runs
    argv = ["train", "--config", str(project / "one" / "config.json"), "--name", "one-again"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    first = json.loads((project / "one" / "config.json").read_text())
    again = json.loads((project / "one-again" / "config.json").read_text())
    assert {**first["train"], "name": None} == {**again["train"], "name": None}
    assert rows(project / "one-again")[0]["loss"] == rows(project / "one")[0]["loss"]  # the same seed, the same numbers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch-objects: [1, 2]\n", "batch-objects must be int, not [1, 2]"),
        ("lr: fast\n", "lr must be float, not 'fast'"),
        ("epoch: 3\n", "unknown option 'epoch'"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
        ("optim:\n  views: 3\n", "'views' belongs in section `data`, not `optim`"),
        ("model.lr: 0.1\n", "'lr' belongs in section `optim`, not `model`"),
        ("optimiser.lr: 0.1\n", "'optimiser.lr' is in no section; sections are data, loss, model, optim, run"),
        ("optim.lr: 0.1\nlr: 0.2\n", "option 'lr' is given twice"),
        ("optim:\n  lr: 0.1\noptim.lr: 0.2\n", "option 'lr' is given twice"),
        ("optim:\n  epoch: 3\n", "unknown option 'epoch'"),
    ],
)
def test_bad_config_files_get_one_line(tiny_data, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["train", "--config", str(path), "--data", str(tiny_data), *TINY])
    assert result.exit_code == 1 and message in result.output and str(path) in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.yaml", "epochs: 0\n", "--epochs 0: must be at least 1"),
        ("a.yaml", "epochs: -5\n", "--epochs -5: must be at least 1"),
        ("a.yaml", "cat-dim: 0\n", "--cat-dim 0: must be at least 1"),
        ("a.yaml", "embed-dim: 0\n", "--cat-dim 0: must be at least 1"),
        ("a.yaml", "obj-dim: -5\n", "--obj-dim -5: must be at least 1"),
        ("a.yaml", "batch-pairs: 0\n", "--batch-pairs 0: must be at least 1"),
        ("a.yaml", "seed: -1\n", "--seed -1: must be from 0 to 4294967295"),
        ("a.yaml", "seed: 1000000000000000000000000000000\n", "must be from 0 to 4294967295"),
        ("a.yaml", "seed: 1.0e+30\n", "seed must be int"),
        ("a.yaml", "val-seed: -7\n", "--val-seed -7: must be from 0"),
        ("a.yaml", "lr-step: -1\n", "--lr-step -1: must be at least 0"),
        ("a.yaml", "lr: 0.001\nlr: 0.01\n", "option 'lr' is given twice"),
        ("a.json", '{"seed": 1, "seed": 2}', "option 'seed' is given twice"),
    ],
)
def test_config_files_are_held_to_the_command_lines_bounds(tiny_data, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    project = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--config", str(path), "--data", str(tiny_data), "--project", str(project)])
    assert result.exit_code == 1 and message in result.output and str(path) in result.output, result.output
    assert "Traceback" not in result.output
    assert not project.exists()  # refused before any run folder


def test_an_edited_runs_config_json_is_held_to_the_bounds(two_runs, tmp_path):
    project, _ = two_runs
    config = json.loads((project / "one" / "config.json").read_text())
    config["train"]["epochs"] = 0
    edited = tmp_path / "config.json"
    edited.write_text(json.dumps(config))
    result = runner.invoke(app, ["train", "--config", str(edited), "--project", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "--epochs 0: must be at least 1" in result.output, result.output


def test_fuzzed_config_files_give_a_config_or_one_clean_line(tmp_path):
    import dataclasses
    import math
    import random

    from piro_cli.training import TrainConfig
    from piro_cli.training.config_file import merged_config

    rng = random.Random(0)
    keys = [f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)] + ["embed-dim", "bogus"]
    junk = [None, True, -1, 0, 3, 2**70, 1e30, math.nan, math.inf, -0.5, "", "x", "cpu", "\x1b[2J", [], ["a", 1], {}, {"a": [None]}]
    for trial in range(150):
        values = {}
        for key in rng.sample(keys, rng.randint(1, 4)):
            value = rng.choice(junk)
            for _ in range(rng.randrange(3)):
                value = rng.choice([[value], {"k": value}])
            values[key] = value
        path = tmp_path / f"c{trial}.json"
        try:
            path.write_text(json.dumps(values))
        except ValueError:
            continue
        try:
            config = merged_config(path, {}, set())
        except PiroError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        else:
            assert isinstance(config, TrainConfig)


def test_yaml_merge_keys_may_be_overridden_but_written_keys_not_repeated():
    from piro_cli.training.config_file import RepeatedKey, _load_yaml

    assert _load_yaml("base: &b {epochs: 3, lr: 0.001}\nrun:\n  <<: *b\n  epochs: 5\n")["run"] == {"epochs": 5, "lr": 0.001}
    with pytest.raises(RepeatedKey):
        _load_yaml("run:\n  epochs: 3\n  epochs: 5\n")


def test_config_file_reader_refuses_other_suffixes(tmp_path):
    path = tmp_path / "options.ini"
    path.write_text("[x]\n")
    with pytest.raises(PiroError, match=r"\.yaml, \.yml, \.toml or \.json"):
        read_config_file(path)


# ----------------------------------------------------------------------------- loggers


def test_the_tensorboard_logger_mirrors_metrics(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    project = tmp_path / "runs"
    argv = ["train", "--data", str(tiny_data), "--project", str(project), "--name", "tb", "--logger", "tensorboard", *TINY]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(project / "tb" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/total", "loss/cat", "lr", "spread/rho", "val/mean"} <= tags
    logged = [e.value for e in events.Scalars("loss/total")]
    assert logged == pytest.approx([float(r["loss"]) for r in rows(project / "tb")], rel=1e-5)  # metrics.csv rounds
    assert "picr/best_epoch/text_summary" in events.Tags()["tensors"]


def test_an_unknown_logger_is_refused(tiny_data):
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--logger", "wandb", *TINY])
    assert result.exit_code == 1 and "--logger 'wandb'" in result.output


def test_a_config_files_dual_false_trains_the_single_space(tiny_data, tmp_path):
    path = tmp_path / "single.yaml"
    path.write_text("dual: false\n")
    project = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--config", str(path), "--data", str(tiny_data), "--project", str(project), "--name", "s", *TINY])
    assert result.exit_code == 0, result.output
    saved = json.loads((project / "s" / "config.json").read_text())["train"]
    assert saved["method"] == "piro-single" and saved["dual"] is False
