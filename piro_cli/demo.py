"""`piro demo`: the whole pipeline on the built-in synthetic dataset, in a work folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from piro_cli.data.prepare import PrepareOptions, PrepareSummary, ProgressCallback, prepare_dataset
from piro_cli.data.sources import synthetic
from piro_cli.data.store import StoreInfo, ViewSetStore

# Stages of the pipeline that later issues add; the demo reports them as missing until they exist.
PENDING_STAGES = {
    "train": "piro train (issue #3)",
    "evaluate": "piro evaluate (issue #4)",
    "visualize": "piro visualize (issue #5)",
}


@dataclass
class DemoResult:
    data_path: Path
    prepared: PrepareSummary | None  # None when an existing demo dataset was reused
    data_info: StoreInfo
    missing_stages: list[str] = field(default_factory=list)


def run_demo(
    workdir: Path,
    seed: int = 0,
    categories: int = synthetic.DEFAULT_CATEGORIES,
    objects_per_category: int = synthetic.DEFAULT_OBJECTS_PER_CATEGORY,
    size: int = 224,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Prepare the synthetic dataset in `workdir` (reused when already there with the same options), then run what exists."""
    data_path = workdir / "synthetic.h5"
    source_options = {"seed": seed, "categories": categories, "objects_per_category": objects_per_category}
    prepared = None
    if not _reusable(data_path, source_options, size):
        options = PrepareOptions(size=size, overwrite=True)
        prepared = prepare_dataset("synthetic", None, data_path, options, source_options, progress=progress)
    with ViewSetStore(data_path) as store:
        info = store.info()
    return DemoResult(data_path, prepared, info, missing_stages=list(PENDING_STAGES.values()))


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
