"""The `piro` command line as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from piro_cli import __version__
from piro_cli.cli import app
from piro_cli.data.store import ViewSetStore

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prepare", "train", "embed", "evaluate", "visualize", "demo"):
        assert command in result.output


@pytest.mark.parametrize("command", ["prepare", "train", "embed", "evaluate", "visualize", "demo"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_prepare_help_explains_every_option():
    result = runner.invoke(app, ["prepare", "--help"], env={"COLUMNS": "200"})
    for option in ("--out", "--size", "--views", "--skip-bad", "--overwrite", "--per-category", "--seed", "--info"):
        assert option in result.output


def test_prepare_then_info(tmp_path, image_tree):
    out = tmp_path / "o.h5"
    result = runner.invoke(app, ["prepare", "objectpi", str(image_tree), "--out", str(out), "--size", "24"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "train 5" in result.output
    assert ViewSetStore(out).num_views == 4
    result = runner.invoke(app, ["prepare", "--info", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Chair (Toy)" in result.output and "fingerprint" in result.output


def test_prepare_errors_are_one_line_without_traceback(tmp_path, image_tree):
    result = runner.invoke(app, ["prepare", "objectpi", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "error:" in result.output and "nowhere" in result.output and "Traceback" not in result.output
    bad = image_tree / "train" / "Mug" / "Mug obj0" / "Mug obj0_View1.png"
    bad.write_bytes(b"garbage")
    out = tmp_path / "o.h5"
    result = runner.invoke(app, ["prepare", "objectpi", str(image_tree), "--out", str(out), "--size", "24"])
    assert result.exit_code == 1 and "Mug obj0_View1.png" in result.output and not out.exists()
    result = runner.invoke(app, ["prepare", "objectpi", str(image_tree), "--out", str(out), "--size", "24", "--skip-bad"])
    assert result.exit_code == 0 and "skipped 1" in result.output and out.exists()
    result = runner.invoke(app, ["prepare", "objectpi", str(image_tree), "--out", str(out), "--size", "24"])
    assert result.exit_code == 1 and "--overwrite" in result.output


def test_prepare_without_raw_dir_or_source_explains(tmp_path):
    result = runner.invoke(app, ["prepare", "modelnet40"])
    assert result.exit_code == 2 and "needs RAW_DIR" in result.output and "_o2c.npy" in result.output
    result = runner.invoke(app, ["prepare"])
    assert result.exit_code == 2 and "objectpi" in result.output


def test_demo_runs_the_whole_pipeline(tmp_path):
    argv = [
        "demo", "--workdir", str(tmp_path / "demo"), "--categories", "3", "--objects-per-category", "4", "--size", "32",
        "--backbone", "tiny", "--epochs", "1",
    ]  # fmt: skip
    result = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    runs = tmp_path / "demo" / "runs"
    assert (tmp_path / "demo" / "synthetic.h5").exists()
    assert all((runs / name / "best.pt").exists() for name in ("dual", "single", "backbone"))
    assert "PICR tasks on the test split" in result.output
    assert all(method in result.output for method in ("backbone", "piro-dual", "piro-single"))
    figures = [line.strip() for line in result.output.splitlines() if line.strip().endswith(".png")]
    assert sorted(Path(f).name for f in figures) == ["distances_dual_vs_single.png", "umap_dual_vs_single.png"]
    assert all(Path(f).exists() for f in figures)
    again = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "reused the dataset" in again.output


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "piro_cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def test_help_keeps_bracketed_words():
    """Help text is literal: `[deploy]` and `[default: ...]` notes are not swallowed as Rich markup."""
    from typer.testing import CliRunner

    from piro_cli.cli import app

    runner = CliRunner()
    export = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert "pip install -e '.[deploy]'" in export.output
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "[default: as released, 1;" in train.output and "[default: as released, 4 pi-cnn" in train.output


def test_the_command_line_starts_without_torch():
    """`piro --help` and every command's options load no torch, torchvision or matplotlib (they cost seconds); the
    start-up time itself is measured in bench/bench_startup.py."""
    import subprocess
    import sys

    code = (
        "import sys, piro_cli.cli; from typer.main import get_command; get_command(piro_cli.cli.app); "
        "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'scipy', 'timm') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_demo_data_prepared_by_hand_has_the_demo_fingerprint(tmp_path):
    """`piro prepare synthetic` with the demo's settings writes the file the demo writes: same fingerprint."""
    from typer.testing import CliRunner

    from piro_cli.cli import app
    from piro_cli.data.prepare import PrepareOptions, prepare_dataset
    from piro_cli.data.store import ViewSetStore
    from piro_cli.demo import demo_source_options

    demo = tmp_path / "demo.h5"
    prepare_dataset("synthetic", None, demo, PrepareOptions(size=32, overwrite=True), demo_source_options(0, 2, 3))
    by_hand = tmp_path / "hand.h5"
    argv = ["prepare", "synthetic", "--seed", "0", "--categories", "2", "--objects-per-category", "3", "--size", "32", "--out", str(by_hand)]
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert ViewSetStore(demo).fingerprint == ViewSetStore(by_hand).fingerprint
