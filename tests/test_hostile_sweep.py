"""Issue #11's sweep after the fixes: the same class of defect found elsewhere, each kept as a regression test.

A feature cache of another kind, a view-set split without objects, an --lr that overflows Adam, an allocation that
fails, a figure too wide to draw, a full disk before a run's first saved epoch, and a metrics.csv that lost rows:
each is one clear line (or a rebuilt cache), a non-zero exit, and nothing stale left behind.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import h5py
import pytest
import torch
import typer
from conftest import tiny_config
from typer.testing import CliRunner

import piro_cli.training.trainer as train_module
from piro_cli.cli import app
from piro_cli.cli.common import err_console, handle_errors
from piro_cli.data.store import ViewSetStore
from piro_cli.errors import DataError, PiroError
from piro_cli.outputs import write_error
from piro_cli.reporting import SilentReporter
from piro_cli.runs import MetricsLog
from piro_cli.training import load_feature_cache, train

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_error_console(monkeypatch):
    """No wrapping of the error line at the test console's 80 columns, so that one line stays one line."""
    monkeypatch.setattr(err_console, "width", 2000)


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A two-epoch run folder (frozen tiny backbone); tests copy it before changing it."""
    project = tmp_path_factory.mktemp("project")
    config = tiny_config(tiny_data, project=str(project), name="base", freeze_backbone=True, feature_passes=1)
    return train(config).run_dir


# ----------------------------------------------------------------------------- feature cache of another kind

KEY = {"backbone": "tiny", "pretrained": False, "data_fingerprint": "0123", "passes": 1, "augment": True}


@pytest.mark.parametrize("payload", [[1, 2], torch.zeros(3), {"key": KEY}, {"key": KEY, "train": "not a tensor"}])
def test_a_feature_cache_piro_did_not_write_is_rebuilt_not_a_traceback(tmp_path, payload):
    path = tmp_path / "tiny-cache.pt"
    torch.save(payload, path)
    assert load_feature_cache(path, KEY) is None  # was: AttributeError ('list' has no .get) or a KeyError later
    torch.save({"key": KEY, "train": torch.zeros(1, 2, 3, 4)}, path)
    assert load_feature_cache(path, KEY)["train"].shape == (1, 2, 3, 4)  # the cache piro writes is still used


@pytest.mark.parametrize("damage", ["a view short", "NaN"])
def test_a_feature_cache_of_the_wrong_shape_or_not_finite_is_rebuilt_saying_so(tiny_data, tmp_path, damage):
    project = tmp_path / "runs"
    config = tiny_config(tiny_data, project=str(project), name="first", freeze_backbone=True, feature_passes=1, epochs=1)
    train(config)
    (cache,) = (project / "feature-cache").glob("*.pt")
    payload = torch.load(cache, weights_only=True)
    reference = payload["train"].clone()
    payload["train"] = payload["train"][:, :, :-1] if damage == "a view short" else payload["train"] * float("nan")
    torch.save(payload, cache)
    assert load_feature_cache(cache, payload["key"], {"train": tuple(reference.shape[:3])}) is None
    lines = []

    class Recorder(SilentReporter):
        def info(self, message: str) -> None:
            lines.append(message)

    reporter = Recorder()
    result = train(tiny_config(tiny_data, project=str(project), name="second", freeze_backbone=True, feature_passes=1, epochs=1), reporter)
    assert any(line.startswith("rebuilding the feature cache") for line in lines), lines
    assert result.best_path.is_file()
    assert torch.equal(torch.load(cache, weights_only=True)["train"], reference)  # rebuilt as it was


# ----------------------------------------------------------------------------- a split without objects


def test_a_split_without_objects_is_refused_on_opening(tiny_data, tmp_path):
    path = Path(shutil.copy(tiny_data, tmp_path / "empty-test.h5"))
    with h5py.File(path, "a") as f:
        for name in ("images", "category", "object_name", "source_path"):
            if name in f["test"]:
                empty = f["test"][name][:0]
                del f["test"][name]
                f["test"][name] = empty
    with pytest.raises(DataError) as refused:  # was: opened, then a torch traceback (max of an empty tensor) in evaluate
        ViewSetStore(path)
    assert str(refused.value).startswith(f"{path}: split 'test' images: hold no objects")


# ----------------------------------------------------------------------------- numbers that overflow, memory


@pytest.mark.parametrize("lr", [1.5, 1e38])
def test_a_learning_rate_above_one_is_refused_before_any_work(lr):
    with pytest.raises(PiroError, match=r"lr .*must be a number > 0 and <= 1"):  # 1e38 was an Adam overflow traceback
        tiny_config(None, lr=lr)
    assert tiny_config(None, lr=1.0).lr == 1.0


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
                     "to allocate 25600000000 bytes. Error code 12 (Cannot allocate memory)"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 8 GiB"),
        MemoryError(),
    ],
)  # fmt: skip
def test_running_out_of_memory_is_one_line(capsys, error):
    @handle_errors
    def command() -> None:
        raise error

    with pytest.raises(typer.Exit) as exited:  # was: the allocator's traceback
        command()
    assert exited.value.exit_code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: out of memory") and "use smaller sizes" in lines[0], lines
    if not isinstance(error, MemoryError):
        assert "allocate 2" in lines[0]  # how much it asked for


def test_other_runtime_errors_still_surface():
    @handle_errors
    def command() -> None:
        raise RuntimeError("a bug, not the user's input")

    with pytest.raises(RuntimeError, match="a bug"):
        command()


@pytest.mark.parametrize("option", ["--top-k", "--queries"])
def test_visualize_refuses_a_figure_too_large_to_draw_before_any_work(option):
    # --top-k 100000 drew for minutes, then matplotlib refused the 13000385-pixel-wide image with a traceback
    result = runner.invoke(app, ["visualize", "no-such-run", option, "100000"])
    assert result.exit_code == 2 and "less than or equal to 100" in result.output, result.output


# ----------------------------------------------------------------------------- full disk before the first saved epoch


def test_a_full_disk_before_the_first_saved_epoch_says_train_again_and_leaves_no_folder(tmp_path, tiny_data, monkeypatch):
    original = train_module.atomic_torch_save

    def disk_fills_at_best(payload, path, advice):
        if Path(path).name == "best.pt":
            raise write_error(Path(path), OSError(errno.ENOSPC, "No space left on device"), advice)
        return original(payload, path, advice)

    monkeypatch.setattr(train_module, "atomic_torch_save", disk_fills_at_best)
    project = tmp_path / "runs"
    with pytest.raises(PiroError) as stopped:
        train(tiny_config(tiny_data, project=str(project), name="full", epochs=1, freeze_backbone=True, feature_passes=1))
    message = str(stopped.value)
    # was: "continue the run with `piro train --resume runs/full`", a folder with config.json and metrics.csv, no last.pt
    assert "disk full writing" in message and "train again (no epoch of this run was saved)" in message
    assert "--resume" not in message
    assert not (project / "full").exists()


def test_a_full_disk_after_a_saved_epoch_still_says_resume(tmp_path, trained_run, monkeypatch):
    run = Path(shutil.copytree(trained_run, tmp_path / "later"))

    original = train_module.atomic_torch_save

    def disk_fills_at_checkpoints(payload, path, advice):
        if Path(path).parent == run:  # the shared feature cache is written first
            raise write_error(Path(path), OSError(errno.ENOSPC, "No space left on device"), advice)
        return original(payload, path, advice)

    monkeypatch.setattr(train_module, "atomic_torch_save", disk_fills_at_checkpoints)
    with pytest.raises(PiroError, match=rf"continue the run with `piro train --resume {run}`"):
        train(tiny_config(None), resume=run, resume_epochs=3)
    assert (run / "last.pt").is_file()


# ----------------------------------------------------------------------------- metrics.csv that lost rows


def resume_line(run: Path) -> str:
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("damage", ["missing", "header only", "first row only", "truncated header"])
def test_resume_refuses_a_metrics_csv_that_lost_epochs(tmp_path, trained_run, damage):
    run = Path(shutil.copytree(trained_run, tmp_path / "damaged"))
    metrics, config = run / "metrics.csv", (run / "config.json").read_bytes()
    lines = metrics.read_text().splitlines(keepends=True)
    if damage == "missing":
        metrics.unlink()
    elif damage == "header only":
        metrics.write_text(lines[0])
    elif damage == "first row only":
        metrics.write_text("".join(lines[:2]))
    else:  # a copy cut short inside the header
        metrics.write_text(lines[0][: len(lines[0]) // 2])
    before = metrics.read_bytes() if metrics.exists() else None
    # was: exit 0, epoch 3 appended to what was left (epochs 1-2 lost, columns cut off with the header)
    line = resume_line(run)
    assert f"{metrics}: holds " in line and "the run's last.pt is at epoch 2" in line and "restore the file" in line
    assert (metrics.read_bytes() if metrics.exists() else None) == before
    assert (run / "config.json").read_bytes() == config  # refused before anything was written


def test_a_row_cut_short_is_refused_not_half_read(tmp_path, trained_run):
    run = Path(shutil.copytree(trained_run, tmp_path / "cut"))
    metrics = run / "metrics.csv"
    text = metrics.read_text()
    metrics.write_text(text[: text.rindex(",")])  # the last row loses its last field
    with pytest.raises(PiroError, match=r"line 3 has \d+ fields but the header \d+"):  # was: read with a field missing
        MetricsLog(metrics).read()
    line = resume_line(run)
    assert "line 3 has" in line and "truncated or edited" in line


def test_an_intact_metrics_csv_still_resumes(tmp_path, trained_run):
    run = Path(shutil.copytree(trained_run, tmp_path / "intact"))
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert [row["epoch"] for row in MetricsLog(run / "metrics.csv").read()] == ["1", "2", "3"]
