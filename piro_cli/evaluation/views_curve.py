"""Accuracy against the number of query views (`piro evaluate --views-curve`), as the PIEs authors report it.

For k = 1 .. V, each probe object's view set is cut to k of its views, drawn at random (seeded, one subset per
object and draw), and the two multi-view recognition tasks are computed with the PICR rules
(piro_cli.retrieval.picr), averaged over `draws` draws:
- MV category recognition: the probe's c_mv from its k views against the gallery objects' c_mv (all views);
  k = V is today's task;
- MV object recognition: the query o_mv from k of the probe's views [V//2:] against the gallery o_mv of its
  views [:V//2]; k runs to V - V//2, where it is today's task.

The curve is saved beside the run: `<run folder>/views_<split>.json` and `.csv`; `piro visualize --views` draws
it, several runs overlaid.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from piro_cli import __version__
from piro_cli.errors import PiroError
from piro_cli.evaluation.evaluate import evaluation_objects
from piro_cli.inference.cache import cached_embeddings
from piro_cli.inference.run import LoadedRun, load_run, require_split
from piro_cli.models.embedding import EmbeddingSet, backbone_features, embed_features
from piro_cli.outputs import write_text
from piro_cli.reporting import Reporter, SilentReporter, stage_progress
from piro_cli.retrieval.picr import run_picr

TASKS = ("mv-category-recognition", "mv-object-recognition")
Progress = Callable[[int, int], None]


@dataclass
class ViewsCurve:
    run: str  # the run's name
    source: str
    split: str
    draws: int
    seed: int
    num_views: int
    points: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # task -> k -> the draws' values
    saved: list[Path] = field(default_factory=list)

    def mean(self, task: str) -> dict[int, float]:
        return {k: float(np.mean(v)) for k, v in self.points[task].items()}

    def std(self, task: str) -> dict[int, float]:
        return {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in self.points[task].items()}

    def to_dict(self) -> dict:
        return {
            "piro_version": __version__,
            "run": self.run,
            "source": self.source,
            "split": self.split,
            "draws": self.draws,
            "seed": self.seed,
            "num_views": self.num_views,
            "tasks": {t: {"k": list(self.points[t]), "mean": list(self.mean(t).values()), "std": list(self.std(t).values())} for t in TASKS},
        }

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["task", "k", "mean", "std", "draws"])
        for task in TASKS:
            for k, values in self.points[task].items():
                writer.writerow([task, k, f"{np.mean(values):.4f}", f"{self.std(task)[k]:.4f}", len(values)])
        return buffer.getvalue()

    @classmethod
    def from_dict(cls, values: dict) -> ViewsCurve:
        """A saved curve (means only: each k's list holds the mean, its std recorded separately); a ValueError
        for anything else."""
        if not isinstance(values, dict) or not isinstance(values.get("tasks"), dict):
            raise ValueError("no 'tasks' mapping")
        unknown = sorted(set(values["tasks"]) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}")
        curve = cls(values["run"], values["source"], values["split"], values["draws"], values["seed"], values["num_views"])
        points = {}
        for task, entry in values["tasks"].items():
            if not isinstance(entry, dict):
                raise ValueError(f"{task}: not a mapping")
            ks, means = entry.get("k"), entry.get("mean")
            if not isinstance(ks, list) or not isinstance(means, list) or len(ks) != len(means):
                raise ValueError(f"{task}: k and mean must be lists of the same length")
            if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
                raise ValueError(f"{task}: k must be view counts (1, 2, ...)")
            if not all(isinstance(m, (int, float)) and not isinstance(m, bool) for m in means):
                raise ValueError(f"{task}: the means must be numbers")
            points[task] = {k: [float(m)] for k, m in zip(ks, means, strict=True)}
        curve.points = points
        return curve


def curve_path(run_folder: Path, split: str, checkpoint: str = "best") -> Path:
    """views_<split>.json for a run's best.pt, views_<checkpoint stem>_<split>.json for its other checkpoints."""
    return run_folder / (f"views_{split}.json" if checkpoint == "best" else f"views_{checkpoint}_{split}.json")


def views_curve(
    source: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    draws: int = 5,
    seed: int = 0,
    device: str | None = None,
    tta: bool | None = None,
    save: bool = True,
    reporter: Reporter | None = None,
) -> ViewsCurve:
    """The curve of one checkpoint (module docstring); saved beside it with `save`."""
    reporter = reporter or SilentReporter()
    if draws < 1:
        raise PiroError(f"--draws {draws}: give at least 1")
    if split not in ("test", "val"):
        raise PiroError(f"--split {split!r}: choose test or val")
    if Path(source).suffix.lower() in (".h5", ".hdf5"):
        raise PiroError(f"{source}: --views-curve re-embeds view subsets, so it needs a checkpoint, not an embeddings file")
    run = load_run(source, device, tta)
    store = run.open_data(data)
    if store.num_views < 2:
        raise PiroError(f"{store.path}: one view per object; a views curve needs at least 2")
    probe_split, probe_rows, gallery_rows = evaluation_objects(run, store, split)
    require_split(store, "train", "the gallery")
    gallery = cached_embeddings(run, store, "train", gallery_rows, stage_progress(reporter, f"{run.name}: gallery"))
    probes = store.split(probe_split)
    rows = np.arange(len(probes)) if probe_rows is None else probe_rows
    feats = backbone_features(run.model, probes, rows, run.device, progress=stage_progress(reporter, f"{run.name}: {split} objects"))
    labels = torch.as_tensor(probes.category[rows])
    base = embed_features(run.model, feats, labels, run.device)
    v = feats.shape[1]
    half = v // 2
    curve = ViewsCurve(run.name, str(source), split, draws, seed, v, {t: {} for t in TASKS})
    total = v + (v - half)
    done = 0
    for k in range(1, v + 1):  # MV category recognition: k of all views
        curve.points[TASKS[0]][k] = []
        for draw in range(draws):
            subset = _subsets(len(rows), v, k, np.random.default_rng([seed, draw, k, 0]))
            mv_cat = _set_embedding(run, feats, subset, "mv_cat")
            probes_k = EmbeddingSet(None, None, mv_cat, None, None, None, labels)
            curve.points[TASKS[0]][k].append(run_picr(gallery.embeddings, probes_k, (TASKS[0],), device=run.device).values[TASKS[0]])
        done += 1
        reporter.progress(f"{run.name}: views curve", done, total)
    for k in range(1, v - half + 1):  # MV object recognition: k of the query half [V//2:]
        curve.points[TASKS[1]][k] = []
        for draw in range(draws):
            subset = half + _subsets(len(rows), v - half, k, np.random.default_rng([seed, draw, k, 1]))
            mv_last = _set_embedding(run, feats, subset, "mv_obj")
            probes_k = EmbeddingSet(None, None, None, None, base.mv_obj_first, mv_last, labels)
            curve.points[TASKS[1]][k].append(run_picr(None, probes_k, (TASKS[1],), device=run.device).values[TASKS[1]])
        done += 1
        reporter.progress(f"{run.name}: views curve", done, total)
    if save:
        path = curve_path(run.folder, split, run.path.stem)
        write_text(json.dumps(curve.to_dict(), indent=2) + "\n", path, "free space or pass --no-save")
        write_text(curve.csv(), path.with_suffix(".csv"), "free space or pass --no-save")
        curve.saved = [path, path.with_suffix(".csv")]
    return curve


def _subsets(objects: int, views: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(objects, k) view indices: k distinct views of each object, drawn at random."""
    return np.argsort(rng.random((objects, views)), axis=1)[:, :k]


@torch.no_grad()
def _set_embedding(run: LoadedRun, feats: torch.Tensor, subset: np.ndarray, field_name: str) -> torch.Tensor:
    """The view-set embedding of each object's views `subset` (from its backbone features), in batches."""
    picked = feats[torch.arange(len(feats))[:, None], torch.as_tensor(subset)]
    parts = [getattr(run.model.forward_features(picked[i : i + 256].to(run.device)), field_name).float().cpu() for i in range(0, len(picked), 256)]
    return torch.cat(parts)
