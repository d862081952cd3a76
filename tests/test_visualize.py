"""`piro visualize` on tiny synthetic runs (tiny backbone, 32-pixel views): every figure is written, is a valid
image of the expected size and is not blank; several runs share one figure; defaults and errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.errors import PiroError
from piro_cli.training import TrainConfig, train
from piro_cli.viz import FigureOptions, draw_figures, umap_plot
from piro_cli.viz import attention as attention_plot
from piro_cli.viz import distances as distances_plot
from piro_cli.viz import retrieval as retrieval_plot
from piro_cli.viz.style import DPI

runner = CliRunner()
VIEWS = 12  # the synthetic set's views per object
UMAP_EPOCHS = 30  # UMAP's own default is slower and the pictures need not be good here


def make_data(path: Path, test_fraction: float) -> Path:
    source = {"seed": 0, "categories": 3, "objects_per_category": 4, "test_fraction": test_fraction}
    prepare_dataset("synthetic", None, path, PrepareOptions(size=32), source)
    return path


def tiny_run(data: Path, project: Path, name: str, **overrides) -> Path:
    values = dict(
        data=str(data), project=str(project), name=name, backbone="tiny", pretrained=False, cat_dim=16, obj_dim=16, epochs=2,
        batch_pairs=4, pairs_per_object=2, lr=1e-3, seed=0, device="cpu", early_stop_rho=0.0, freeze_backbone=True, feature_passes=1,
    )  # fmt: skip
    values.update(overrides)
    return train(TrainConfig(**values)).run_dir.resolve()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A dual and a single-space run on a set with a test split (2 test objects per category)."""
    root = tmp_path_factory.mktemp("viz")
    data = make_data(root / "synthetic.h5", test_fraction=0.5)
    project = root / "runs"
    return {"data": data, "dual": tiny_run(data, project, "dual"), "single": tiny_run(data, project, "single", dual=False)}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_figure(path: Path, inches: tuple[float, float]) -> None:
    assert path.exists(), path
    image = pixels(path)
    assert image.shape[:2] == (round(inches[1] * DPI), round(inches[0] * DPI))
    assert image.std() > 10, f"{path} looks blank"
    packed = (image[..., 0].astype(np.uint32) << 16) | (image[..., 1].astype(np.uint32) << 8) | image[..., 2]
    assert len(np.unique(packed)) > 10, f"{path} has almost no colours"


EXPECTED = {
    "umap": lambda: umap_plot.figure_inches(1),
    "distances": lambda: distances_plot.FIGURE_INCHES,
    "retrieval": lambda: retrieval_plot.figure_inches(2, 1, 3),
    "attention": lambda: attention_plot.figure_inches(VIEWS, 2, 1),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_each_figure_is_written_valid_and_not_blank(runs, kind):
    written = draw_figures([runs["dual"]], [kind], FigureOptions(queries=2, top_k=3, umap_epochs=UMAP_EPOCHS))
    assert written == [runs["dual"] / f"{kind}.png"]
    assert_figure(written[0], EXPECTED[kind]())


def test_pdf_beside_png(runs):
    written = draw_figures([runs["single"]], ["distances", "attention"], FigureOptions(pdf=True))
    assert [p.name for p in written] == ["distances.png", "distances.pdf", "attention.png", "attention.pdf"]
    assert all(p.read_bytes().startswith(b"%PDF") for p in written if p.suffix == ".pdf")


def test_two_runs_share_one_figure(runs):
    written = draw_figures([runs["dual"], runs["single"]], ["umap", "retrieval", "attention", "distances"],
                           FigureOptions(queries=1, top_k=2, umap_epochs=UMAP_EPOCHS))  # fmt: skip
    names = [p.name for p in written]
    assert names == [f"{k}_dual_vs_single.png" for k in ("distances", "umap", "retrieval", "attention")]
    assert all(p.parent == runs["dual"] for p in written)
    assert_figure(written[1], umap_plot.figure_inches(2))  # four panels: two rows of (object, category)
    assert_figure(written[2], retrieval_plot.figure_inches(1, 2, 2))
    assert_figure(written[3], attention_plot.figure_inches(VIEWS, 2, 2))


def test_umap_is_reproducible_for_a_seed(runs):
    first = draw_figures([runs["single"]], ["umap"], FigureOptions(seed=3, umap_epochs=UMAP_EPOCHS))[0].read_bytes()
    again = draw_figures([runs["single"]], ["umap"], FigureOptions(seed=3, umap_epochs=UMAP_EPOCHS))[0].read_bytes()
    other = draw_figures([runs["single"]], ["umap"], FigureOptions(seed=4, umap_epochs=UMAP_EPOCHS))[0].read_bytes()
    assert first == again
    assert first != other


def test_umap_categories_option(runs):
    draw_figures([runs["dual"]], ["umap"], FigureOptions(categories=["Cup", "mug"], umap_epochs=UMAP_EPOCHS))
    with pytest.raises(PiroError, match="'plate' is not a category.*choose from: mug, cup, bowl"):
        draw_figures([runs["dual"]], ["umap"], FigureOptions(categories=["plate"]))


def test_cli_uses_the_latest_run_and_prints_paths(runs):
    shutil.copytree(runs["dual"], Path("runs/mine"), ignore=shutil.ignore_patterns("*.png", "*.pdf"))
    result = runner.invoke(app, ["visualize", "--distances", "--retrieval", "--queries", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for kind in ("distances", "retrieval"):
        assert f"wrote runs/mine/{kind}.png" in result.output
        assert Path(f"runs/mine/{kind}.png").exists()
    assert not Path("runs/mine/umap.png").exists()


def test_cli_without_runs_says_how_to_make_one():
    result = runner.invoke(app, ["visualize", "--umap"])
    assert result.exit_code == 1
    assert "no runs found under runs/" in result.output and "piro train" in result.output


def test_cli_help_explains_every_option():
    result = runner.invoke(app, ["visualize", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--umap", "--distances", "--retrieval", "--attention", "--all", "--categories", "--queries", "--top-k", "--seed",
                   "--pdf", "--data", "--device"):  # fmt: skip
        assert option in result.output


def test_validation_objects_stand_in_for_a_missing_test_split(tmp_path):
    data = make_data(tmp_path / "no-test.h5", test_fraction=0.0)
    with_val = tiny_run(data, tmp_path / "runs", "val", epochs=1, val_fraction=0.5)
    assert draw_figures([with_val], ["attention"])[0].exists()
    without = tiny_run(data, tmp_path / "runs", "noval", epochs=1)
    with pytest.raises(PiroError, match="has no test split and run noval kept no validation objects"):
        draw_figures([without], ["attention"])


def test_data_must_be_the_runs_data(runs, tmp_path):
    other = make_data(tmp_path / "other.h5", test_fraction=0.25)
    with pytest.raises(PiroError, match="is not the dataset run dual was trained on.*--data"):
        draw_figures([runs["dual"]], ["attention"], data=other)
    moved = shutil.copy(runs["data"], tmp_path / "moved.h5")
    assert draw_figures([runs["dual"]], ["attention"], data=moved)[0].exists()


def test_missing_run_or_metrics_is_a_clear_error(runs, tmp_path):
    with pytest.raises(PiroError, match="no such run folder or checkpoint"):
        draw_figures([tmp_path / "nope"], ["umap"])
    lone = Path(shutil.copy(runs["dual"] / "best.pt", tmp_path / "lone.pt"))
    with pytest.raises(PiroError, match="metrics.csv: no such file"):
        draw_figures([lone], ["distances"])


def test_every_figure_leaves_out_the_distances_of_a_run_without_history(runs, tmp_path):
    """A checkpoint without metrics.csv (e.g. `piro import-weights`) still gets the figures that need no history."""
    lone = Path(shutil.copy(runs["dual"] / "best.pt", tmp_path / "lone.pt"))
    written = draw_figures([lone], ["umap", "distances", "retrieval", "attention"], FigureOptions(umap_epochs=UMAP_EPOCHS),
                           skip_missing_history=True)  # fmt: skip
    assert sorted(p.name for p in written) == ["attention.png", "retrieval.png", "umap.png"]
