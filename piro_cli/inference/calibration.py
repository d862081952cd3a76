"""`piro index calibrate`: the distance beyond which `identify` answers `unknown`, chosen on held-out objects.

Held-out objects (a split the index was not built from: by default the run's validation objects) play both
roles an index meets in use. In each of several seeded draws they are split in half at random:
- enrolled: the first half of each object's views (V//2) is added to the index, and each of the other views
  is one photo of a known object (a genuine query);
- never seen: each of their last V - V//2 views is one photo of an unknown object (an impostor query).
A query's distance is the distance `identify` thresholds: to the nearest enrolled object, over the index's
own objects and the draw's enrolled ones. With the pooled distances of all draws:

    false-accept rate FAR(t) = share of impostor queries at distance <= t  (an unknown object named)
    false-reject rate FRR(t) = share of genuine queries at distance > t    (a known object called unknown)

The threshold is the equal-error point (the t that minimises max(FAR, FRR)), or with `target_far` the
largest t whose FAR is at most that. Also reported: how often an accepted genuine query names the wrong
object. The threshold is written into the index; `identify --threshold` overrides it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from piro_cli.errors import PiroError
from piro_cli.inference.embedding import embed_objects
from piro_cli.inference.index import MANIFEST, GalleryIndex, _commit
from piro_cli.inference.run import group_rows
from piro_cli.inference.search import as_matrix, squared_distances
from piro_cli.outputs import OutputLock
from piro_cli.reporting import Reporter, SilentReporter, stage_progress


@dataclass
class Calibration:
    threshold: float
    far: float  # at the threshold, in [0, 1]
    frr: float
    wrong_object: float  # genuine queries accepted with another object's name
    genuine: np.ndarray = field(repr=False)  # pooled distances of the genuine queries
    impostor: np.ndarray = field(repr=False)
    objects: int = 0  # held-out objects
    draws: int = 0
    rule: str = "equal error"
    index: str = ""
    split: str = "val"
    excluded: list[str] = field(default_factory=list)  # held-out objects the index already holds: not used
    seconds: float = 0.0

    def record(self) -> dict:
        return {
            "distance": round(float(self.threshold), 6),
            "rule": self.rule,
            "far": round(self.far, 6),
            "frr": round(self.frr, 6),
            "wrong_object": round(self.wrong_object, 6),
            "genuine_queries": int(len(self.genuine)),
            "impostor_queries": int(len(self.impostor)),
            "objects": self.objects,
            "draws": self.draws,
            "split": self.split,
            "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at `threshold`."""
    far = float(np.mean(impostor <= threshold)) if len(impostor) else 0.0
    frr = float(np.mean(genuine > threshold)) if len(genuine) else 0.0
    return far, frr


def choose_threshold(genuine: np.ndarray, impostor: np.ndarray, target_far: float | None = None) -> float:
    """The equal-error threshold, or the largest with FAR <= `target_far`; candidates are midpoints between
    consecutive observed distances (and just below the smallest), so the rates at a threshold are exact."""
    values = np.unique(np.concatenate([genuine, impostor]).astype(np.float64))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    far = np.searchsorted(np.sort(impostor), candidates, side="right") / max(1, len(impostor))
    frr = 1.0 - np.searchsorted(np.sort(genuine), candidates, side="right") / max(1, len(genuine))
    if target_far is not None:
        allowed = np.flatnonzero(far <= target_far)
        return float(candidates[allowed[-1]]) if len(allowed) else float(candidates[0])
    worst = np.maximum(far, frr)
    best = np.flatnonzero(worst == worst.min())
    return float(candidates[best[len(best) // 2]])  # the middle of a flat optimum


def calibrate_index(
    index: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "val",
    draws: int = 5,
    seed: int = 0,
    target_far: float | None = None,
    objects: Sequence[str] | None = None,
    run: str | Path | None = None,
    device: str | None = None,
    save: bool = True,
    reporter: Reporter | None = None,
) -> Calibration:
    """Pick the index's `unknown` threshold on held-out objects (module docstring) and, with `save`, store it.
    `objects`: use only the held-out objects of these names (e.g. to keep others for a test of the threshold)."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    if draws < 1:
        raise PiroError(f"--draws {draws}: give at least 1")
    if target_far is not None and not 0 <= target_far < 1:
        raise PiroError(f"--far {target_far}: give a rate from 0 to 1 (e.g. 0.05)")
    if split not in ("train", "val", "test"):
        raise PiroError(f"--split {split!r}: choose val, test or train (objects the index was not built from)")
    gallery = GalleryIndex(index)
    if not gallery.objects:
        raise PiroError(f"{gallery.path}: holds no objects; build it with `piro index build` first")
    loaded = gallery.load_run(run, device)
    store = loaded.open_data(data)
    source_split, rows = group_rows(loaded.checkpoint, store, split)
    names = store.split(source_split).object_names
    rows = np.arange(len(names)) if rows is None else rows
    enrolled = {o.name for o in gallery.objects}
    excluded = [names[int(r)] for r in rows if names[int(r)] in enrolled]
    rows = np.array([r for r in rows if names[int(r)] not in enrolled], dtype=np.int64)
    if objects is not None:
        wanted = set(objects)
        rows = np.array([r for r in rows if names[int(r)] in wanted], dtype=np.int64)
    if len(rows) < 2:
        raise PiroError(
            f"{store.path} {split}: {len(rows)} objects the index does not already hold; calibration needs at least 2 "
            "held-out objects (train with --val-fraction, or pass --split test)"
        )
    if store.num_views < 2:
        raise PiroError(f"{store.path}: one view per object; calibration needs at least 2 (some to enrol, some to query)")
    held = embed_objects(
        loaded.model, store, source_split, rows, loaded.device, stage_progress(reporter, f"embedding {split} objects")
    )
    genuine, impostor, wrong = _pooled_distances(gallery, held.embeddings.sv_obj.numpy(), draws, seed)
    threshold = choose_threshold(genuine, impostor, target_far)
    far, frr = rates(genuine, impostor, threshold)
    accepted = genuine <= threshold
    result = Calibration(
        threshold, far, frr, float(np.mean(wrong & accepted)) if len(wrong) else 0.0, genuine, impostor, len(rows), draws,
        "equal error" if target_far is None else f"FAR <= {target_far}", gallery.path.name, split, excluded,
    )  # fmt: skip
    if save:
        with OutputLock(gallery.path, folder=True):
            current = GalleryIndex(index)  # under the lock: keep what another writer committed
            manifest = current.manifest
            manifest["threshold"] = result.record()
            _commit(current.path, manifest)
        reporter.info(f"threshold {threshold:.4f} written to {gallery.path / MANIFEST}")
    result.seconds = time.perf_counter() - started
    return result


def _pooled_distances(
    gallery: GalleryIndex, sv_obj: np.ndarray, draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Genuine and impostor distances of every draw, pooled, and for each genuine query whether its nearest
    enrolled object is another one."""
    n, v = sv_obj.shape[:2]
    first = v // 2
    enrol = as_matrix(sv_obj[:, :first].reshape(n * first, -1))
    queries = as_matrix(sv_obj[:, first:].reshape(n * (v - first), -1))
    owner = np.repeat(np.arange(n), v - first)
    vectors = gallery.vectors()
    to_index = np.sqrt(squared_distances(queries, vectors.sv_obj, vectors.sv_obj_norms).min(axis=1))  # nearest index object
    to_held = np.sqrt(
        squared_distances(queries, enrol).reshape(len(queries), n, first).min(axis=2)
    )  # (queries, held-out objects)
    genuine, impostor, wrong = [], [], []
    for draw in range(draws):
        chosen = np.random.default_rng(seed + draw).permutation(n)[: (n + 1) // 2]
        is_enrolled = np.zeros(n, dtype=bool)
        is_enrolled[chosen] = True
        among = np.where(is_enrolled[None, :], to_held, np.inf)
        nearest_held = among.argmin(axis=1)
        distance = np.minimum(to_index, among.min(axis=1))
        known = is_enrolled[owner]
        genuine.append(distance[known])
        impostor.append(distance[~known])
        own = among[np.arange(len(queries)), owner]
        wrong.append(((to_index < own) | (nearest_held != owner))[known])
    return np.concatenate(genuine), np.concatenate(impostor), np.concatenate(wrong)
