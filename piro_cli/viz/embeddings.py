"""A run, loaded for plotting: its checkpoint, model, data file, test objects and (on demand) their embeddings.

Which run. A run folder means its `best.pt`; a `.pt` file is used as it is; no run at all means the most
recently trained run under `./runs` (the newest `runs/*/last.pt`). A run is named after its folder
(`runs/synth-dual/best.pt` -> `synth-dual`; another checkpoint of the folder adds its stem: `synth-dual-last`),
and its figures go into that folder.

Which data: the run's data file as piro_cli.inference.run finds it (or `--data`), with the categories
and the fingerprint the run recorded; anything else is a PiroError that says to pass the right file with `--data`.

Which views ("test views"). The data file's `test` split when it has one; otherwise the run's validation
objects (the checkpoint's `data.val`: a `val` split, or the objects `--val-fraction` carved out of `train`,
checked against the recorded object names); otherwise a PiroError, since every other object was trained on.

Embeddings are computed only for the objects a figure asks for, once per object, with a progress callback
`progress(stage, done, total)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from piro_cli.data.store import SplitData, ViewSetStore
from piro_cli.errors import PiroError
from piro_cli.inference.run import LoadedRun, group_rows, load_run
from piro_cli.models.embedding import backbone_features
from piro_cli.models.pan import PAN
from piro_cli.runs import checkpoint_file, latest_run_dir

StageProgress = Callable[[str, int, int], None]

@dataclass
class RunRef:
    """A run named on the command line, resolved without loading anything."""

    name: str  # label in titles and output file names
    checkpoint: Path
    folder: Path  # the checkpoint's folder: figures are written here

    @property
    def metrics_path(self) -> Path:
        return self.folder / "metrics.csv"

    def config(self) -> dict:
        """The sections (model, train, data: mappings) of the run's config.json that can be read; empty when the
        checkpoint is not in a run folder. What it holds only labels figures, so an edited file costs labels, not
        the command."""
        path = self.folder / "config.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(record, dict):
            return {}
        return {key: value for key, value in record.items() if isinstance(value, dict)}


def resolve_runs(runs: Sequence[str | Path] | None, project: Path = Path("runs")) -> list[RunRef]:
    """Run folders or checkpoints -> RunRefs; none given: the latest run under `project`."""
    paths = [Path(r) for r in runs] if runs else [latest_run_dir(project)]
    refs: list[RunRef] = []
    for path in paths:
        checkpoint = checkpoint_file(path)
        folder = checkpoint.parent
        name = folder.resolve().name if checkpoint.stem == "best" else f"{folder.resolve().name}-{checkpoint.stem}"
        name = re.sub(r"[^\w.-]", "_", name) or "run"
        taken = {r.name for r in refs}
        unique, number = name, 2
        while unique in taken:
            unique, number = f"{name}-{number}", number + 1
        refs.append(RunRef(unique, checkpoint, folder))
    return refs


def space_of(model_config: dict) -> str:
    """'dual' or 'single' (PiRO-SE), from a checkpoint's or config.json's model config."""
    return "dual" if model_config.get("dual", True) else "single"


@dataclass
class ObjectEmbeddings:
    """Embeddings of some test objects (rows = positions in `LoadedRun.indices`), as float32 numpy arrays."""

    rows: np.ndarray  # (n,)
    labels: np.ndarray  # (n,) category indices
    sv_obj: np.ndarray  # (n, V, Do) single-view object embeddings
    sv_cat: np.ndarray  # (n, V, Dc) single-view category embeddings (single space: the same as sv_obj)
    attn_obj: np.ndarray  # (n, V, V) attention weights of A_obj (row i: how much view i attends to each view)
    attn_cat: np.ndarray  # (n, V, V) of A_cat (single space: the same as attn_obj)


@dataclass
class PlotRun:
    """A run loaded for plotting: its model (piro_cli.inference) and the test objects its figures show."""

    ref: RunRef
    run: LoadedRun
    store: ViewSetStore
    split: SplitData  # the split the test objects are rows of
    indices: np.ndarray  # test objects: rows of `split`
    test_source: str  # where the test objects come from, in words: "the test split" or "the run's validation objects ..."
    _cache: dict[int, tuple[np.ndarray, ...]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def checkpoint(self) -> dict:
        return self.run.checkpoint

    @property
    def model(self) -> PAN:
        return self.run.model

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def dual(self) -> bool:
        return bool(self.model.config.dual)

    @property
    def space(self) -> str:
        return "dual" if self.dual else "single"

    @property
    def categories(self) -> list[str]:
        return list(self.store.categories)

    @property
    def labels(self) -> np.ndarray:
        """Category index of each test object."""
        return self.split.category[self.indices]

    def object_name(self, row: int) -> str:
        return self.split.object_names[int(self.indices[row])]

    def views(self, row: int) -> np.ndarray:
        """uint8 (V, S, S, 3) views of test object `row`."""
        return self.split.views_uint8(int(self.indices[row]))

    def embed(self, rows: Sequence[int], progress: StageProgress | None = None) -> ObjectEmbeddings:
        """Embeddings of the test objects at positions `rows`; each object is computed once per run."""
        rows = np.asarray(rows, dtype=np.int64)
        missing = [int(r) for r in dict.fromkeys(rows.tolist()) if int(r) not in self._cache]
        if missing:
            stage = f"embedding {self.name}: {len(missing)} test objects"
            report = (lambda done, total: progress(stage, done, total)) if progress is not None else None
            feats = backbone_features(self.model, self.split, self.indices[missing], self.device, progress=report)
            with torch.no_grad():
                for start in range(0, len(missing), 256):
                    out = self.model.forward_features(feats[start : start + 256].to(self.device))
                    parts = [t.float().cpu().numpy() for t in (out.sv_obj, out.sv_cat, out.attn_obj, out.attn_cat)]
                    for offset, row in enumerate(missing[start : start + 256]):
                        self._cache[row] = tuple(p[offset] for p in parts)
        stacked = [np.stack([self._cache[int(r)][k] for r in rows]) for k in range(4)]
        return ObjectEmbeddings(rows, self.labels[rows], *stacked)


def open_run(ref: RunRef, data: str | Path | None = None, device: torch.device | str = "cpu") -> PlotRun:
    """Load a run's model and find its data file and test objects (see the module docstring)."""
    run = load_run(ref.checkpoint, torch.device(device))
    if "data" not in run.checkpoint or "categories" not in run.checkpoint:
        raise PiroError(f"{ref.checkpoint}: the checkpoint has no data record; pass a best.pt or last.pt written by `piro train`")
    store = run.open_data(data, same_data=True)
    split, indices, source = _test_objects(ref, run, store)
    return PlotRun(ref, run, store, split, indices, source)


def _test_objects(ref: RunRef, run: LoadedRun, store: ViewSetStore) -> tuple[SplitData, np.ndarray, str]:
    if "test" in store.splits:
        split = store.split("test")
        indices, source = np.arange(len(split)), "the test split"
    else:
        if not run.checkpoint["data"].get("val"):
            raise PiroError(
                f"{store.path}: has no test split and run {ref.name} kept no validation objects, so every object was trained on; "
                "prepare the data with a test split, or train with --val-fraction"
            )
        name, rows = group_rows(run.checkpoint, store, "val")
        split = store.split(name)
        indices = np.arange(len(split)) if rows is None else rows
        source = f"the run's validation objects from the {name} split (the file has no test split)"
    if len(indices) == 0:
        raise PiroError(f"{store.path}: run {ref.name} has no test objects to plot; prepare the data with a test split")
    return split, indices, source


def select_categories(run: PlotRun, wanted: Sequence[str] | None, count: int = 5) -> list[int]:
    """Category indices to plot: the named ones (case-insensitive), or the `count` with the most test objects (ties: file order)."""
    counts = np.bincount(run.labels, minlength=len(run.categories))
    present = [c for c in range(len(counts)) if counts[c] > 0]
    if not wanted:
        return sorted(present, key=lambda c: (-counts[c], c))[:count]
    lookup = {name.lower(): i for i, name in enumerate(run.categories)}
    chosen: list[int] = []
    for name in wanted:
        index = run.categories.index(name) if name in run.categories else lookup.get(name.lower())
        if index is None or counts[index] == 0:
            have = ", ".join(run.categories[c] for c in present)
            why = "is not a category of" if index is None else "has no test objects in"
            raise PiroError(f"--categories: {name!r} {why} run {run.name}'s data {run.store.path}; choose from: {have}")
        if index not in chosen:
            chosen.append(index)
    return chosen
