"""`piro demo`: the paper's point on the built-in synthetic dataset, in a work folder.

prepare the synthetic set (hard: one colour scheme per category, per-view cameras, lights and cluttered
backgrounds) -> train piro-dual and piro-single with the same seed (ImageNet efficientnet_lite0, frozen, so it
runs on a CPU in minutes) -> add the untrained `backbone` baseline -> one `piro compare` table of the three on
the test split -> UMAP of dual vs single side by side and the distance curves of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from piro_cli.data.prepare import PrepareOptions, PrepareSummary, prepare_dataset
from piro_cli.data.sources import synthetic
from piro_cli.data.store import ViewSetStore
from piro_cli.evaluation.compare import Comparison, compare_runs
from piro_cli.training import TrainConfig, TrainReporter, TrainResult, train
from piro_cli.viz import draw_figures

DEMO_EPOCHS = 10
DEMO_FIGURES = ("umap", "distances")


@dataclass
class DemoResult:
    data_path: Path
    prepared: PrepareSummary | None  # None when an existing demo dataset was reused
    runs: dict[str, TrainResult]  # "dual", "single", "backbone"
    comparison: Comparison
    figures: list[Path] = field(default_factory=list)


def demo_train_config(data_path: Path, workdir: Path, backbone: str, epochs: int, method: str, seed: int = 0) -> TrainConfig:
    """The demo's models: frozen ImageNet backbone, small embeddings.

    Choices that differ from the paper's fine-tuning recipe, for a CPU in minutes: the backbone is frozen
    and read once (one clean feature pass, shared by the three runs); the dimensions are paper Fig. 7's for
    ModelNet-40 (64 / 128), whose rendered CAD views the synthetic set resembles; the learning rate is 10x the
    recipe's because only freshly initialised heads train.
    """
    name = {"piro-dual": "dual", "piro-single": "single", "backbone": "backbone"}[method]
    return TrainConfig(
        data=str(data_path), project=str(workdir / "runs"), name=name, method=method, backbone=backbone,
        cat_dim=64, obj_dim=128, lr=1e-4, epochs=epochs, freeze_backbone=True, feature_passes=1, seed=seed,
    )  # fmt: skip


def run_demo(
    workdir: Path,
    seed: int = 0,
    categories: int = synthetic.DEFAULT_CATEGORIES,
    objects_per_category: int = synthetic.DEFAULT_OBJECTS_PER_CATEGORY,
    size: int = 224,
    backbone: str = "efficientnet_lite0",
    epochs: int = DEMO_EPOCHS,
    reporter: TrainReporter | None = None,
) -> DemoResult:
    """Run the pipeline in `workdir`; the dataset is reused when already there with the same options."""
    data_path = workdir / "synthetic.h5"
    source_options = demo_source_options(seed, categories, objects_per_category)
    progress = (
        None if reporter is None else (lambda done, total: reporter.progress("preparing the synthetic dataset", done, total))
    )
    prepared = None
    if not _reusable(data_path, source_options, size):
        options = PrepareOptions(size=size, overwrite=True)
        prepared = prepare_dataset("synthetic", None, data_path, options, source_options, progress=progress)
    runs = {
        name: train(demo_train_config(data_path, workdir, backbone, epochs, method, seed), reporter)
        for name, method in (("dual", "piro-dual"), ("single", "piro-single"), ("backbone", "backbone"))
    }
    comparison = compare_runs(
        [runs[name].run_dir for name in ("backbone", "dual", "single")], split="test", data=data_path, reporter=reporter
    )
    figures = draw_figures(
        [runs["dual"].run_dir, runs["single"].run_dir], DEMO_FIGURES, project=workdir / "runs",
        progress=None if reporter is None else reporter.progress,
    )  # fmt: skip
    return DemoResult(data_path, prepared, runs, comparison, figures)


def demo_source_options(seed: int, categories: int, objects_per_category: int) -> dict:
    """The demo's synthetic set: every option `piro prepare synthetic` records, so that the same set prepared by
    hand gets the same fingerprint (and `piro compare` puts a new run beside the demo's)."""
    return {
        "seed": seed, "categories": categories, "objects_per_category": objects_per_category,
        "test_fraction": synthetic.DEFAULT_TEST_FRACTION, "difficulty": "hard",
    }  # fmt: skip


def _reusable(path: Path, source_options: dict, size: int) -> bool:
    if not path.exists():
        return False
    try:
        with ViewSetStore(path) as store:
            options = store.info().creation_options
    except Exception:  # an unreadable or foreign file is simply rebuilt
        return False
    wanted = {"source": "synthetic", "size": size, **source_options}
    return all(options.get(key) == value for key, value in wanted.items())
