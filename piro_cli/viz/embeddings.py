"""A run, loaded for plotting: its checkpoint, model, data file, test objects and (on demand) their embeddings.

Which run. A run folder means its `best.pt`; a `.pt` file is used as it is; no run at all means the most
recently trained run under `./runs` (the newest `runs/*/last.pt`). A run is named after its folder
(`runs/synth-dual/best.pt` -> `synth-dual`; another checkpoint of the folder adds its stem: `synth-dual-last`),
and its figures go into that folder.

Which data. The data file the checkpoint recorded (`data.path`, as given to `piro train`; a relative path is
looked up from the current folder, then from the folder that holds the run's project folder), or the file
given with `--data`. Either way the file must hold the categories the run was trained on and have the
fingerprint the run recorded (a file with the same content prepared elsewhere has the same fingerprint);
anything else is a PiroError that says to pass the right file with `--data`.

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
from piro_cli.errors import PiroError, short_cause
from piro_cli.features import compute_features
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.runs import checkpoint_file, latest_run_dir, load_checkpoint

StageProgress = Callable[[str, int, int], None]

# Checkpoint entries a plot never needs; dropped after loading to free memory.
_TRAINING_STATE = ("optimizer_state", "scheduler_state", "loss_state", "rng")


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
        """The run's config.json (empty when the checkpoint is not in a run folder)."""
        path = self.folder / "config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}


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
class LoadedRun:
    ref: RunRef
    checkpoint: dict
    model: PAN
    device: torch.device
    store: ViewSetStore
    split: SplitData  # the split the test objects are rows of
    indices: np.ndarray  # test objects: rows of `split`
    test_source: str  # where the test objects come from, in words: "the test split" or "the run's validation objects ..."
    _cache: dict[int, tuple[np.ndarray, ...]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.ref.name

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
            feats = compute_features(self.model, self.split, self.indices[missing], self.device, progress=report)
            with torch.no_grad():
                for start in range(0, len(missing), 256):
                    out = self.model.forward_features(feats[start : start + 256].to(self.device))
                    parts = [t.float().cpu().numpy() for t in (out.sv_obj, out.sv_cat, out.attn_obj, out.attn_cat)]
                    for offset, row in enumerate(missing[start : start + 256]):
                        self._cache[row] = tuple(p[offset] for p in parts)
        stacked = [np.stack([self._cache[int(r)][k] for r in rows]) for k in range(4)]
        return ObjectEmbeddings(rows, self.labels[rows], *stacked)


def open_run(ref: RunRef, data: str | Path | None = None, device: torch.device | str = "cpu") -> LoadedRun:
    """Load a run's model and find its data file and test objects (see the module docstring)."""
    device = torch.device(device)
    checkpoint = load_checkpoint(ref.checkpoint)
    for key in _TRAINING_STATE:
        checkpoint.pop(key, None)
    for key in ("model_config", "model_state", "categories", "data"):
        if key not in checkpoint:
            raise PiroError(
                f"{ref.checkpoint}: the checkpoint has no '{key}' entry; pass a best.pt or last.pt written by `piro train`"
            )
    config = PANConfig.from_dict(checkpoint["model_config"])
    config.pretrained = False  # the weights come from the checkpoint: never fetch ImageNet weights for nothing
    model = PAN(config)
    try:
        model.load_state_dict(checkpoint["model_state"])
    except RuntimeError as exc:
        raise PiroError(f"{ref.checkpoint}: its weights do not fit its model config ({short_cause(exc)}); retrain") from exc
    model.to(device).eval()
    store = _open_data(ref, checkpoint, data)
    split, indices, source = _test_objects(ref, checkpoint, store)
    return LoadedRun(ref, checkpoint, model, device, store, split, indices, source)


def _open_data(ref: RunRef, checkpoint: dict, data: str | Path | None) -> ViewSetStore:
    recorded = checkpoint["data"].get("path")
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise PiroError(f"--data {path}: no such file; pass the HDF5 file run {ref.name} was trained on")
    else:
        candidates = [Path(recorded)] if recorded else []
        if recorded and not Path(recorded).is_absolute():
            candidates.append(ref.folder.parent.parent / recorded)  # trained from the folder holding runs/
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise PiroError(
                f"{ref.checkpoint}: its data file {recorded} is not there (looked in {', '.join(str(c) for c in candidates) or 'nowhere'}); "
                "pass the file the run was trained on with --data FILE"
            )
    store = ViewSetStore(path)
    if list(store.categories) != list(checkpoint["categories"]):
        raise PiroError(
            f"{path}: its {len(store.categories)} categories are not the {len(checkpoint['categories'])} run {ref.name} was trained on "
            f"({', '.join(checkpoint['categories'][:5])}...); pass the run's data file with --data FILE"
        )
    expected = checkpoint["data"].get("fingerprint")
    if expected and store.fingerprint != expected:
        raise PiroError(
            f"{path}: is not the dataset run {ref.name} was trained on (fingerprint {store.fingerprint}, the run recorded {expected}); "
            "pass the original file with --data FILE"
        )
    return store


def _test_objects(ref: RunRef, checkpoint: dict, store: ViewSetStore) -> tuple[SplitData, np.ndarray, str]:
    if "test" in store.splits:
        split = store.split("test")
        indices, source = np.arange(len(split)), "the test split"
    else:
        val = checkpoint["data"].get("val")
        if not val:
            raise PiroError(
                f"{store.path}: has no test split and run {ref.name} kept no validation objects, so every object was trained on; "
                "prepare the data with a test split, or train with --val-fraction"
            )
        split = store.split(val["split"])
        indices = np.asarray(val["indices"], dtype=np.int64)
        in_range = len(indices) == 0 or (indices.min() >= 0 and indices.max() < len(split))
        recorded = val.get("names")
        if not in_range or (recorded is not None and [split.object_names[int(i)] for i in indices] != list(recorded)):
            raise PiroError(
                f"{store.path}: its '{val['split']}' split does not hold run {ref.name}'s validation objects; pass the run's data file with --data FILE"
            )
        source = f"the run's validation objects from the {val['split']} split (the file has no test split)"
    if len(indices) == 0:
        raise PiroError(f"{store.path}: run {ref.name} has no test objects to plot; prepare the data with a test split")
    return split, indices, source


def select_categories(run: LoadedRun, wanted: Sequence[str] | None, count: int = 5) -> list[int]:
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
