"""A gallery index: the embeddings of enrolled objects, saved, searched exactly, and extended without retraining.

`piro index build` embeds the objects of a data file's split; `piro index add` enrols new objects from a few
photos; `piro identify` answers a view set of photos with a category, the nearest objects and, beyond the
calibrated distance (`piro index calibrate`), `unknown`.

Layout: a folder `NAME.piro-index/`:

    index.json          the manifest (format "piro-index", version 1): the checkpoint it was built with (path,
                        weights fingerprint, model config, image size, test-time flips), the categories, the
                        objects (id, name, category, views, where from, shard), the shards, the threshold and
                        its calibration
    shards/NNNNNN.npz   the embeddings of the objects one build or add enrolled, float32, L2-normalised:
                        view_object (n,) object ids; sv_cat (n, Dc), sv_obj (n, Do) single-view embeddings;
                        set_object (m,); mv_cat (m, Dc), mv_obj (m, Do) the view-set embeddings of every object

Writes are whole or not at all: a new shard is written under a new name and the manifest replaced in one
rename, so a crash leaves the old index or the new one (a shard the manifest does not name is removed by the
next write). A lock (`.lock` in the folder) keeps two writers apart. An index refuses any checkpoint but the
one it was built with (the fingerprint of its weights).

How a view set of photos is answered (`identify`; the scoring rule is recorded in the index, `ScoringRule`):
- category: each photo's 10 nearest enrolled views in the category space vote, all photos' votes pooled; the
  majority wins, a tie goes to the category listed first (with one photo: SV category recognition);
- objects: an object's distance to the photos is, by `ScoringRule.distance`, "views": per photo the distance to
  its nearest enrolled view (SV object recognition's rule), averaged over the photos; "viewset": the distance
  between the photos' view-set embedding (o_mv through the attention head, as the MV object tasks) and the
  object's (from its enrolment photos); "combined" (default): the mean of the two;
- objects are ranked by that distance and the first is the answer; by default ("scaled") each object's distance
  is first divided by its group's scale (the median spread of the objects the run trained on, or of the others):
  training pulls the trained objects' views together, and at one scale for all they swallowed the photos of
  new objects, enrolled or not (docs/BENCHMARKS.md, "Open-set identification");
- its score, by `ScoringRule.rejection`: its distance ("distance"), that distance over the second-nearest
  object's ("ratio"), over its neighbourhood radius ("neighbourhood"), over its own enrolment spread (the
  root-mean-square distance of its enrolled views to their centre: "spread") or, by default ("scaled"), over the
  mean of its own spread and its group's scale;
- `unknown` when that score is above the threshold calibrated for that number of photos (`piro index
  calibrate`, piro_cli.inference.calibration).
"""

from __future__ import annotations

import io
import json
import shutil
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from piro_cli import __version__
from piro_cli.data.photos import read_photos
from piro_cli.data.sources.base import IMAGE_SUFFIXES
from piro_cli.errors import DataError, PiroError
from piro_cli.inference.index_manifest import DISTANCES, REJECTIONS, check_manifest, check_shard, recorded_tta_scales
from piro_cli.outputs import OutputLock, check_output_path, write_bytes, write_json
from piro_cli.reporting import Reporter, SilentReporter, stage_progress
from piro_cli.retrieval.search import KNN_VOTES, as_matrix, nearest, squared_distances, squared_norms

if TYPE_CHECKING:  # torch is imported where a model runs: `identify --onnx` and the search need none of it
    from piro_cli.inference.embedding import EmbeddedGroup
    from piro_cli.inference.run import LoadedRun

FORMAT_NAME = "piro-index"
FORMAT_VERSION = 1
SUFFIX = ".piro-index"
MANIFEST = "index.json"
SHARDS = "shards"
VIEW_FIELDS = ("sv_cat", "sv_obj")
SET_FIELDS = ("mv_cat", "mv_obj")


@dataclass
class IndexedObject:
    id: int
    name: str
    category: int  # index into the index's categories
    views: int
    source: str  # "build: <data file> <split>" or "add: <n> photos"
    shard: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def trained(self) -> bool:
        """Whether the index's run trained on this object: `piro index build` of the train split (its source reads
        "build: <data file> train"); objects of other splits and objects enrolled from photos were never trained on."""
        return self.source.startswith("build: ") and self.source.endswith(" train")


@dataclass
class Vectors:
    """The enrolled embeddings, views grouped by object (contiguous, objects in manifest order)."""

    view_object: np.ndarray  # (n,) position of each view's object in `GalleryIndex.objects`
    sv_cat: np.ndarray
    sv_obj: np.ndarray
    mv_cat: np.ndarray  # (objects, Dc), manifest order
    mv_obj: np.ndarray
    view_starts: np.ndarray  # (objects,) first view row of each object
    view_category: np.ndarray  # (n,) category of each view
    trained: np.ndarray  # (objects,) bool: the run trained on the object (IndexedObject.trained)
    sv_cat_norms: np.ndarray = field(init=False)  # squared norms, derived: what every search needs
    sv_obj_norms: np.ndarray = field(init=False)
    mv_obj_norms: np.ndarray = field(init=False)
    _spread: np.ndarray | None = field(init=False, default=None, repr=False)
    _scale: np.ndarray | None = field(init=False, default=None, repr=False)
    _radius: np.ndarray | None = field(init=False, default=None, repr=False)
    _raw: tuple[np.ndarray, np.ndarray] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.sv_cat_norms = squared_norms(self.sv_cat)
        self.sv_obj_norms = squared_norms(self.sv_obj)
        self.mv_obj_norms = squared_norms(self.mv_obj)

    @property
    def spread(self) -> np.ndarray:
        """(objects,) each object's own spread: the root-mean-square distance of its enrolled views (object space)
        to their centroid, with n - 1 in the mean (n views; unbiased, so objects of 4 and of 8 views compare).
        Objects of fewer than MIN_SPREAD_VIEWS views (or of identical views) take their group's `scale`: two views
        give a spread too noisy to rank or threshold by (docs/BENCHMARKS.md, "Open-set identification")."""
        if self._spread is None:
            raw, counts = self._raw_spread()
            own = (counts >= MIN_SPREAD_VIEWS) & (raw > 0)
            self._spread = np.where(own, raw, self.scale).astype(np.float32)
        return self._spread

    @property
    def scale(self) -> np.ndarray:
        """(objects,) each object's group scale: the median spread of its group, the objects the run trained on or
        the others (enrolled from photos, or built from a split it did not train on). Training pulls the trained
        objects' views together (on ObjectPI their spread is about 3/4 of a newly enrolled object's), so a photo
        of a new object lies nearer to them than to its own object; dividing each object's distances by its
        group's scale compares them on one footing. A median over many objects is steady even when each has only
        two views, so objects of 2 views count here; a group with no measured spread takes the median of all
        (1 when no object has one)."""
        if self._scale is None:
            raw, counts = self._raw_spread()
            measured = (counts >= 2) & (raw > 0)
            overall = float(np.median(raw[measured])) if measured.any() else 1.0
            scale = np.full(len(raw), overall, dtype=np.float32)
            for group in (self.trained, ~self.trained):
                if (measured & group).any():
                    scale[group] = np.median(raw[measured & group])
            self._scale = scale
        return self._scale

    def _raw_spread(self) -> tuple[np.ndarray, np.ndarray]:
        """(spread (objects,), view counts (objects,)): sqrt(sum of squared distances to the centroid / (n - 1)),
        0 for objects of one view; computed once. The sum of squared distances is sum ||x||^2 - ||sum x||^2 / n,
        from the views' squared norms (known) and per-object sums of the views (a reshape when every object has
        as many views, else one sparse product): 2-D reduceat took seconds at 100,000 views."""
        if self._raw is None:
            # only searched indexes get here (GalleryIndex._searchable): every object has a view
            counts = np.diff(np.append(self.view_starts, len(self.view_object)))
            views = self.sv_obj
            if len(counts) and np.all(counts == counts[0]):
                sums = views.reshape(len(counts), int(counts[0]), -1).sum(axis=1, dtype=np.float64)
            else:
                from scipy.sparse import csr_matrix

                membership = csr_matrix(
                    (np.ones(len(views)), (self.view_object, np.arange(len(views)))), shape=(len(counts), len(views))
                )
                sums = np.asarray(membership @ views.astype(np.float64))
            norms = np.add.reduceat(self.sv_obj_norms.astype(np.float64), self.view_starts) if len(counts) else np.zeros(0)
            squared = norms - np.einsum("ij,ij->i", sums, sums) / counts
            # one view, or identical views: no spread; the difference is then float32 rounding of the norms (the
            # views are unit vectors: about 1e-7 a view), which must not pass for a tiny spread
            squared[(counts < 2) | (squared <= 1e-6 * counts)] = 0.0
            self._raw = (np.sqrt(squared / np.maximum(counts - 1, 1)), counts)
        return self._raw

    @property
    def radius(self) -> np.ndarray:
        """(objects,) each object's neighbourhood radius: the distance from its view-set embedding to that of its
        k-th nearest other object (k = NEIGHBOURHOOD_K, fewer when the index is small). Computed on first use,
        in blocks of objects (quadratic in the objects: an index of 12,500 objects takes seconds)."""
        if self._radius is None:
            n = len(self.mv_obj)
            k = min(NEIGHBOURHOOD_K, n - 1)
            radius = np.full(n, 2.0, dtype=np.float32)  # no other object: the largest distance of unit vectors
            for start in range(0, n if k > 0 else 0, 1024):
                d2 = squared_distances(self.mv_obj[start : start + 1024], self.mv_obj, self.mv_obj_norms)
                d2[np.arange(len(d2)), np.arange(start, start + len(d2))] = np.inf  # not itself
                radius[start : start + len(d2)] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
            self._radius = np.maximum(radius, 1e-6)
        return self._radius


READ_ATTEMPTS = 5  # reads of a manifest and its shards, when writers keep replacing them meanwhile
NEIGHBOURHOOD_K = 5
MIN_SPREAD_VIEWS = 3  # fewer enrolled views give no spread of their own (Vectors.spread)


@dataclass(frozen=True)
class ScoringRule:
    """How `identify` scores a view set of photos against the enrolled objects (module docstring).

    distance: "views" (per photo the nearest enrolled view, averaged over the photos), "viewset" (view-set
    embeddings), "combined" (their mean). rejection, the score thresholded for `unknown` (lower: more like the
    nearest object): "distance" (the nearest object's distance), "ratio" (over the second-nearest object's: the
    ratio test of instance matching), "spread" (over the nearest object's own enrolment spread: a per-object
    threshold), "neighbourhood" (over its neighbourhood radius: how far its k-th nearest other object lies),
    "scaled" (objects ranked by their distance over their group's scale, `Vectors.scale`, and the nearest's
    distance over the mean of that scale and its own spread). Every rule but "scaled" answers with the object
    nearest by distance."""

    distance: str = "combined"
    rejection: str = "scaled"

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise PiroError(f"scoring distance {self.distance!r}: choose one of {', '.join(DISTANCES)}")
        if self.rejection not in REJECTIONS:
            raise PiroError(f"rejection rule {self.rejection!r}: choose one of {', '.join(REJECTIONS)}")

    def to_dict(self) -> dict:
        return {"distance": self.distance, "rejection": self.rejection}

    @classmethod
    def from_dict(cls, record: dict | None) -> ScoringRule:
        """The rule a manifest or threshold records; an index calibrated before rules existed used views + distance."""
        if not record:
            return cls("views", "distance")
        return cls(str(record.get("distance", "views")), str(record.get("rejection", "distance")))

    @property
    def label(self) -> str:
        return f"{self.distance}+{self.rejection}"


@dataclass
class Queries:
    """Query view sets of the same number of photos Q: their single-view and view-set embeddings."""

    sv_cat: np.ndarray  # (n, Q, Dc)
    sv_obj: np.ndarray  # (n, Q, Do)
    mv_obj: np.ndarray  # (n, Do)

    @classmethod
    def one(cls, sv_cat, sv_obj, mv_obj) -> Queries:
        """One view set: (Q, Dc), (Q, Do) and its view-set embedding (Do,)."""
        return cls(as_matrix(sv_cat)[None], as_matrix(sv_obj)[None], as_matrix(mv_obj).reshape(1, -1))

    def __len__(self) -> int:
        return len(self.mv_obj)

    def rows(self, block: slice) -> Queries:
        return Queries(self.sv_cat[block], self.sv_obj[block], self.mv_obj[block])


@dataclass
class Scores:
    """Queries scored against an index: every object's distance, the nearest object and the score thresholded."""

    distances: np.ndarray  # (n, objects)
    ranking: np.ndarray  # (n, objects) what the objects are ranked by: the distances, or ("scaled") over each's scale
    nearest: np.ndarray  # (n,) position of the object ranked first (ties: the earlier one)
    score: np.ndarray  # (n,) the rule's score of that object: lower is surer
    votes: np.ndarray  # (n, categories) the 10-NN category votes, pooled over each query's photos


class GalleryIndex:
    """An index folder, opened: the manifest in memory, the vectors loaded on first use. `in_memory` gives one
    that lives only in memory (evaluation, calibration draws): the same search, enrolment and scoring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._memory: dict[str, dict[str, np.ndarray]] | None = None
        manifest = self.path / MANIFEST
        if not self.path.is_dir() or not manifest.is_file():
            if self.path.exists() and not self.path.is_dir():
                raise PiroError(
                    f"{self.path}: is a file, not an index folder; build one with `piro index build RUN --out NAME{SUFFIX}`"
                )
            raise PiroError(
                f"{self.path}: no such index (no {MANIFEST} in it); build one with `piro index build RUN --out NAME{SUFFIX}`"
            )
        self._open(*self._read_manifest(), manifest)

    def _read_manifest(self) -> tuple[dict, tuple]:
        """(the manifest, the stamp of the file read): a writer replaces index.json by a rename, so a new stamp
        (inode, modification time, size) means a new version."""
        manifest = self.path / MANIFEST
        try:
            stamp = _manifest_stamp(self.path)
            text = json.loads(manifest.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            cause = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise DataError(f"{manifest}: cannot be read as JSON ({cause}); the index is damaged, build it again") from None
        if not isinstance(text, dict) or text.get("format") != FORMAT_NAME:
            raise DataError(f"{manifest}: not a piro index manifest (no '{FORMAT_NAME}' tag); build one with `piro index build`")
        return text, stamp

    @classmethod
    def in_memory(cls, manifest: dict, shards: dict[str, dict[str, np.ndarray]], path: str | Path = "<memory>") -> GalleryIndex:
        gallery = cls.__new__(cls)
        gallery.path = Path(path)
        gallery._memory = shards
        gallery._open(manifest, None, gallery.path)
        return gallery

    def _open(self, manifest: dict, stamp: tuple | None, where: Path) -> None:
        check_manifest(manifest, where, FORMAT_VERSION)
        self.manifest = manifest
        self._stamp = stamp
        try:
            self.objects = [IndexedObject(**o) for o in self.manifest["objects"]]
            self.categories = list(self.manifest["categories"])
            self.checkpoint = dict(self.manifest["checkpoint"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: a required entry is missing or malformed ({exc}); build the index again") from None
        self._vectors: Vectors | None = None

    # ------------------------------------------------------------------ facts

    @property
    def calibration(self) -> dict | None:
        """The threshold record of `piro index calibrate` (None before calibration)."""
        return self.manifest.get("threshold") or None

    @property
    def rule(self) -> ScoringRule:
        """The scoring rule: the calibrated one, else the default."""
        calibration = self.calibration
        return ScoringRule.from_dict(calibration.get("scoring")) if calibration else ScoringRule()

    def calibrated(self, photos: int) -> dict | None:
        """The calibration for a query of `photos` photos: its own when calibrated, else that of the most photos
        calibrated below it (a threshold of fewer photos is the stricter one); an index calibrated before
        per-photo-count thresholds holds one distance for all."""
        calibration = self.calibration
        if not calibration:
            return None
        by_photos = calibration.get("by_photos")
        if not by_photos:
            return {"score": float(calibration["distance"]), "far": calibration.get("far"), "frr": calibration.get("frr")}
        counts = sorted(int(k) for k in by_photos)
        chosen = max([c for c in counts if c <= photos], default=counts[0])
        return by_photos[str(chosen)]

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold for one photo (None before calibration)."""
        entry = self.calibrated(1)
        return None if entry is None else float(entry["score"])

    @property
    def num_views(self) -> int:
        return sum(o.views for o in self.objects)

    def info(self) -> dict:
        per_category: dict[str, int] = {}
        for obj in self.objects:
            per_category[self.categories[obj.category]] = per_category.get(self.categories[obj.category], 0) + 1
        shard_bytes = sum(
            (self.path / SHARDS / s).stat().st_size for s in self.manifest.get("shards", []) if (self.path / SHARDS / s).is_file()
        )
        return {
            "path": str(self.path),
            "objects": len(self.objects),
            "views": self.num_views,
            "categories": len(self.categories),
            "objects_per_category": per_category,
            "enrolled": sum(1 for o in self.objects if o.source.startswith("add")),
            "checkpoint": self.checkpoint.get("path"),
            "fingerprint": self.checkpoint.get("fingerprint"),
            "dims": {"category": self.checkpoint.get("cat_dim"), "object": self.checkpoint.get("obj_dim")},
            "tta": self.checkpoint.get("tta"),
            "tta_scales": recorded_tta_scales(self.checkpoint),
            "scoring": self.rule.to_dict(),
            "threshold": self.manifest.get("threshold"),
            "bytes_on_disk": shard_bytes,
            "created_at": self.manifest.get("created_at"),
            "updated_at": self.manifest.get("updated_at"),
        }

    # ------------------------------------------------------------------ the run behind it

    def load_run(self, run: str | Path | None = None, device: str | None = None) -> LoadedRun:
        """The index's own checkpoint (or `run`, when it has moved), refused when its weights are not the index's."""
        source = Path(run) if run is not None else Path(self.checkpoint["path"])
        if run is None and not source.exists():
            raise PiroError(
                f"{self.path}: its checkpoint {source} is not there; pass the run it was built with (moved) with --run RUN"
            )
        from piro_cli.inference.run import load_run

        loaded = load_run(source, device, tta=bool(self.checkpoint.get("tta")), tta_scales=recorded_tta_scales(self.checkpoint))
        found = loaded.fingerprint()
        if found != self.checkpoint["fingerprint"]:
            raise PiroError(
                f"{loaded.path}: not the checkpoint {self.path} was built with (weights fingerprint {found}, the index "
                f"holds {self.checkpoint['fingerprint']}); embeddings of other weights cannot be compared: pass the index's "
                "own run with --run, or build a new index for this one"
            )
        config = loaded.model.config
        dims = (config.cat_dim if config.dual else config.obj_dim, config.obj_dim)
        if dims != (self.checkpoint["cat_dim"], self.checkpoint["obj_dim"]):
            raise DataError(
                f"{self.path}: its record says {self.checkpoint['cat_dim']}/{self.checkpoint['obj_dim']}-d embeddings, its "
                f"run embeds {dims[0]}/{dims[1]}-d; the index is damaged, build it again"
            )
        return loaded

    # ------------------------------------------------------------------ vectors

    def vectors(self) -> Vectors:
        if self._vectors is None:
            for attempt in range(READ_ATTEMPTS):
                try:
                    self._vectors = self._load_vectors()
                    break
                except DataError:
                    # a writer may have replaced the manifest and removed the shards it superseded after we read
                    # it: read the new version and try again; the same version failing is damage
                    if attempt + 1 == READ_ATTEMPTS or not self._reopen_if_replaced():
                        raise
        return self._vectors

    def replaced_on_disk(self) -> bool:
        """Whether index.json is now another version than the one read here (a writer replaced it since)."""
        if self._memory is not None:
            return False
        try:
            return _manifest_stamp(self.path) != self._stamp
        except OSError:
            return False

    def _reopen_if_replaced(self) -> bool:
        if not self.replaced_on_disk():
            return False
        try:
            manifest, stamp = self._read_manifest()
        except DataError:
            return False
        self._open(manifest, stamp, self.path / MANIFEST)
        return True

    def _load_vectors(self) -> Vectors:
        ids = np.array([o.id for o in self.objects], dtype=np.int64)
        lookup = np.full(int(ids.max(initial=-1)) + 2, -1, dtype=np.int64)  # object id -> position; -1: removed
        lookup[ids] = np.arange(len(ids))
        views: dict[str, list] = {"object": [], "sv_cat": [], "sv_obj": []}
        sets: dict[str, list] = {"object": [], "mv_cat": [], "mv_obj": []}
        for shard in self.manifest.get("shards", []):
            arrays = self._read_shard(shard)
            for rows_of, fields, into in (("view_object", VIEW_FIELDS, views), ("set_object", SET_FIELDS, sets)):
                position = lookup[np.clip(arrays[rows_of], -1, len(lookup) - 1)]
                keep = position >= 0
                every = bool(keep.all())
                into["object"].append(position if every else position[keep])
                for name in fields:
                    into[name].append(arrays[name] if every else arrays[name][keep])
        dc, do = int(self.checkpoint["cat_dim"]), int(self.checkpoint["obj_dim"])
        view_object, sv = _grouped(views, {"sv_cat": dc, "sv_obj": do})
        set_object, mv = _grouped(sets, {"mv_cat": dc, "mv_obj": do})
        counts = np.bincount(view_object, minlength=len(self.objects))
        if len(set_object) != len(self.objects) or np.any(counts != [o.views for o in self.objects]):
            raise DataError(
                f"{self.path}: its shards do not hold the objects its manifest lists; the index is damaged, build it again"
            )
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        categories = np.array([o.category for o in self.objects], dtype=np.int64)
        return Vectors(
            view_object,
            as_matrix(sv["sv_cat"]),
            as_matrix(sv["sv_obj"]),
            as_matrix(mv["mv_cat"]),
            as_matrix(mv["mv_obj"]),
            starts,
            categories[view_object] if len(categories) else np.empty(0, np.int64),
            np.array([o.trained for o in self.objects], dtype=bool),
        )

    def _read_shard(self, shard: str) -> dict[str, np.ndarray]:
        if self._memory is not None:
            return self._memory[shard]
        path = self.path / SHARDS / shard
        try:
            with np.load(path, allow_pickle=False) as data:
                if not hasattr(data, "files"):
                    raise ValueError("not an .npz archive")
                arrays = {name: data[name] for name in ("view_object", *VIEW_FIELDS, "set_object", *SET_FIELDS)}
                if "fingerprint" in data.files:
                    arrays["fingerprint"] = data["fingerprint"]
        except FileNotFoundError:
            raise DataError(f"{path}: missing, though the manifest names it; the index is damaged, build it again") from None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            cause = str(exc) or type(exc).__name__
            raise DataError(f"{path}: cannot be read ({cause}); the index is damaged, build it again") from None
        check_shard(arrays, path, str(self.checkpoint["fingerprint"]), int(self.checkpoint["cat_dim"]), int(self.checkpoint["obj_dim"]))
        return arrays

    def with_enrolled(self, enrolled: Sequence[EnrolledEmbeddings]) -> GalleryIndex:
        """An in-memory copy of this index with objects enrolled as `add_objects` enrols them (not written)."""
        manifest = json.loads(json.dumps(self.manifest))
        shards = {name: self._read_shard(name) for name in manifest.get("shards", [])}
        shard, arrays = _enrol(manifest, enrolled)
        shards[shard] = arrays
        return GalleryIndex.in_memory(manifest, shards, self.path)

    # ------------------------------------------------------------------ answering

    def score(self, queries: Queries, rule: ScoringRule | None = None, chunk: int = 256, votes: bool = True) -> Scores:
        """Score query view sets against every enrolled object by `rule` (default: the index's own); `votes=False`
        leaves the category vote out (all zero), for measurements of the object decision alone."""
        rule = rule or self.rule
        vectors = self._searchable()
        parts = [
            self._score_block(queries.rows(slice(s, s + chunk)), rule, vectors, votes) for s in range(0, len(queries), chunk)
        ]
        if not parts:
            empty = np.empty(0)
            none = np.empty((0, len(self.objects)))
            return Scores(none, none, empty.astype(np.int64), empty, np.empty((0, len(self.categories))))
        fields = ("distances", "ranking", "nearest", "score", "votes")
        return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))

    def _score_block(self, queries: Queries, rule: ScoringRule, vectors: Vectors, votes: bool = True) -> Scores:
        n, q = queries.sv_obj.shape[:2]
        distances = None
        if rule.distance in ("views", "combined"):  # per photo the nearest view of each object, mean over photos
            d2 = squared_distances(queries.sv_obj.reshape(n * q, -1), vectors.sv_obj, vectors.sv_obj_norms)
            per_photo = np.sqrt(np.minimum.reduceat(d2, vectors.view_starts, axis=1))
            distances = per_photo.reshape(n, q, -1).mean(axis=1)
        if rule.distance in ("viewset", "combined"):
            sets = np.sqrt(squared_distances(queries.mv_obj, vectors.mv_obj, vectors.mv_obj_norms))
            distances = sets if distances is None else (distances + sets) / 2
        # ranking by each object's own spread cost rank-1 with few photos; by its group's scale it gains (BENCHMARKS)
        ranking = distances / vectors.scale if rule.rejection == "scaled" else distances
        nearest = np.argmin(ranking, axis=1)  # the first of equal minima: the earlier object
        best = distances[np.arange(n), nearest]
        if rule.rejection == "distance":
            score = best
        elif rule.rejection == "ratio":
            if distances.shape[1] > 1:
                second = np.partition(distances, 1, axis=1)[:, 1]  # the nearest other object (ties: the same distance)
            else:
                second = np.full(n, 2.0, dtype=distances.dtype)
            score = best / np.maximum(second, 1e-12)
        elif rule.rejection == "spread":
            score = best / vectors.spread[nearest]
        elif rule.rejection == "scaled":
            score = best / ((vectors.spread[nearest] + vectors.scale[nearest]) / 2)
        else:
            score = best / vectors.radius[nearest]
        if votes:
            counted = self._category_votes(queries.sv_cat.reshape(n * q, -1)).reshape(n, q, -1).sum(axis=1)
        else:
            counted = np.zeros((n, len(self.categories)), dtype=np.int64)
        return Scores(distances, ranking, nearest, score.astype(np.float64), counted)

    def identify(
        self, sv_cat, sv_obj, mv_obj, top: int = 5, threshold: float | None = None, rule: ScoringRule | None = None
    ) -> dict:
        """The answer for one view set of photos, from their single-view embeddings (k, Dc), (k, Do) and their
        view-set embedding (Do,) (module docstring). `threshold`: None uses the index's calibrated one for k
        photos (no calibration: never unknown)."""
        started = time.perf_counter()
        rule = rule or self.rule
        scores = self.score(Queries.one(sv_cat, sv_obj, mv_obj), rule)
        return self._answer(scores, 0, top, threshold, len(sv_obj), rule, time.perf_counter() - started)

    def identify_each(
        self, sv_cat, sv_obj, mv_obj, top: int = 5, threshold: float | None = None, rule: ScoringRule | None = None,
        chunk: int = 256,
    ) -> list[dict]:  # fmt: skip
        """One answer per photo, each photo its own query (a batch of single-photo `identify` calls, vectorised);
        `mv_obj` (n, Do): each photo's view-set embedding as a view set of one."""
        sv_cat, sv_obj, mv_obj = as_matrix(sv_cat), as_matrix(sv_obj), as_matrix(mv_obj)
        rule = rule or self.rule
        answers = []
        for start in range(0, len(sv_obj), chunk):
            began = time.perf_counter()
            block = slice(start, start + chunk)
            scores = self.score(Queries(sv_cat[block, None], sv_obj[block, None], mv_obj[block]), rule)
            each = (time.perf_counter() - began) / len(scores.score)
            answers += [self._answer(scores, k, top, threshold, 1, rule, each) for k in range(len(scores.score))]
        return answers

    def _category_votes(self, sv_cat: np.ndarray) -> np.ndarray:
        """(photos, categories): the categories of each photo's 10 nearest enrolled views, counted."""
        vectors = self._searchable()
        neighbours, _ = nearest(sv_cat, vectors.sv_cat, KNN_VOTES, vectors.sv_cat_norms)
        labels = vectors.view_category[neighbours]
        votes = np.zeros((len(sv_cat), len(self.categories)), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(len(sv_cat)), labels.shape[1]), labels.ravel()), 1)
        return votes

    def _searchable(self) -> Vectors:
        if not self.objects:
            raise PiroError(f"{self.path}: holds no objects; enrol some with `piro index add`")
        return self.vectors()

    def _answer(
        self, scores: Scores, row: int, top: int, threshold: float | None, photos: int, rule: ScoringRule, seconds: float
    ) -> dict:
        calibration = self.calibrated(photos) if rule == self.rule else None  # a threshold belongs to its rule
        if threshold is None and calibration is not None:
            threshold = float(calibration["score"])
        distances, ranking, votes = scores.distances[row], scores.ranking[row], scores.votes[row]
        top = min(max(1, int(top)), len(distances))
        candidates = np.argpartition(ranking, top - 1)[:top] if top < len(ranking) else np.arange(len(ranking))
        order = candidates[np.lexsort((candidates, ranking[candidates]))]  # ranked first first, ties to the earlier object
        score = float(scores.score[row])
        winner = int(np.argmax(votes))  # the most votes; a tie to the category listed first (`vote`'s "smallest")
        accepted = threshold is None or score <= threshold
        false_accepts = false_accept_rate(calibration, score) if calibration is not None else None
        return {
            "answer": self.objects[order[0]].name if accepted else "unknown",
            "nearest_object": self.objects[order[0]].name,
            "category": self.categories[winner],
            "category_share": round(float(votes[winner]) / max(1, int(votes.sum())), 4),
            "category_votes": {self.categories[c]: int(votes[c]) for c in np.argsort(-votes, kind="stable") if votes[c] > 0},
            "nearest": [
                {
                    "object": self.objects[i].name,
                    "category": self.categories[self.objects[i].category],
                    "distance": round(float(distances[i]), 4),
                }
                for i in order
            ],
            "distance": round(float(distances[order[0]]), 4),
            "score": round(score, 4),
            "threshold": threshold,
            "false_accept_rate": None if false_accepts is None else round(false_accepts, 4),
            "scoring": rule.to_dict(),
            "photos": int(photos),
            "search_seconds": seconds,
        }


def false_accept_rate(calibration: dict, score: float) -> float | None:
    """The share of never-enrolled objects' queries (calibration's impostors) that score at most `score`: how often
    an answer this sure is wrong about an object that is not enrolled. None when the calibration kept no scores."""
    impostors = calibration.get("impostor_scores")
    if not impostors:
        return None
    return float(np.searchsorted(np.asarray(impostors, dtype=np.float64), score, side="right") / len(impostors))


@dataclass
class EnrolledEmbeddings:
    """One object to enrol, embedded: its enrolment photos' single-view embeddings and their view set's."""

    name: str
    category: str
    source: str
    sv_cat: np.ndarray  # (E, Dc)
    sv_obj: np.ndarray  # (E, Do)
    mv_cat: np.ndarray  # (Dc,)
    mv_obj: np.ndarray  # (Do,)


def _enrol(manifest: dict, enrolled: Sequence[EnrolledEmbeddings]) -> tuple[str, dict[str, np.ndarray]]:
    """Add objects to a manifest (ids, categories, a new shard) and give the shard's arrays: the one enrolment
    rule of `add_objects` and of the in-memory enrolment of evaluation and calibration."""
    shard = _next_shard(manifest)
    categories = list(manifest["categories"])
    next_id = int(manifest.get("next_id", len(manifest["objects"])))
    records, view_rows = [], []
    for item in enrolled:
        if item.category not in categories:
            categories.append(item.category)
        records.append(IndexedObject(next_id, item.name, categories.index(item.category), len(item.sv_obj), item.source, shard).to_dict())
        view_rows.extend([next_id] * len(item.sv_obj))
        next_id += 1
    arrays = {
        "view_object": np.asarray(view_rows, dtype=np.int64),
        "set_object": np.array([r["id"] for r in records], dtype=np.int64),
        "sv_cat": as_matrix(np.concatenate([e.sv_cat for e in enrolled])),
        "sv_obj": as_matrix(np.concatenate([e.sv_obj for e in enrolled])),
        "mv_cat": as_matrix(np.stack([e.mv_cat for e in enrolled])),
        "mv_obj": as_matrix(np.stack([e.mv_obj for e in enrolled])),
    }
    manifest["categories"] = categories
    manifest["objects"] = manifest["objects"] + records
    manifest["shards"] = manifest["shards"] + [shard]
    manifest["next_id"] = next_id
    return shard, arrays



def _grouped(parts: dict[str, list], dims: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The shards' rows joined and ordered by object position (stable), copying only what must move."""
    objects = np.concatenate(parts["object"]) if len(parts["object"]) > 1 else (parts["object"] or [np.empty(0, np.int64)])[0]
    ordered = bool(np.all(objects[1:] >= objects[:-1]))
    order = None if ordered else np.argsort(objects, kind="stable")
    out = {}
    for name, dim in dims.items():
        pieces = parts[name]
        joined = np.concatenate(pieces) if len(pieces) > 1 else (pieces[0] if pieces else np.empty((0, dim), np.float32))
        out[name] = joined if order is None else joined[order]
    return (objects if order is None else objects[order]), out


# ----------------------------------------------------------------------------- writing


def _shard_bytes(arrays: dict[str, np.ndarray], fingerprint: str) -> bytes:
    """A shard file's bytes, with the fingerprint of the weights that made its embeddings."""
    buffer = io.BytesIO()
    np.savez(
        buffer, view_object=arrays["view_object"].astype(np.int64), set_object=arrays["set_object"].astype(np.int64),
        fingerprint=np.array(fingerprint),
        **{name: as_matrix(arrays[name]) for name in (*VIEW_FIELDS, *SET_FIELDS)},
    )  # fmt: skip
    return buffer.getvalue()


def commit_index(path: Path, manifest: dict, new_shard: tuple[str, bytes] | None = None) -> None:
    """Write a shard (new name) then the manifest (one rename); remove the shards the manifest no longer names."""
    shards = path / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    advice = f"free space; {path} is unchanged"
    if new_shard is not None:
        write_bytes(new_shard[1], shards / new_shard[0], advice)
    manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(manifest, path / MANIFEST, advice)
    named = set(manifest["shards"])
    for entry in shards.iterdir():
        if entry.suffix == ".npz" and entry.name not in named:
            entry.unlink(missing_ok=True)


def _next_shard(manifest: dict) -> str:
    number = int(manifest.get("next_shard", 0))
    manifest["next_shard"] = number + 1
    return f"{number:06d}.npz"


@dataclass
class IndexChange:
    path: Path
    objects: int  # objects added or removed
    views: int
    seconds: float
    total_objects: int
    total_views: int
    names: list[str] = field(default_factory=list)


def build_index(
    run: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "train",
    device: str | None = None,
    tta: bool | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    tta_scales: tuple[float, ...] | None = None,
) -> IndexChange:
    """Embed the objects of a data split into a new index: train: the objects the run trained on; val: its
    validation objects; test: the data file's test split. `tta`, `tta_scales`: how every photo of this index is
    embedded, now and by later adds and identifications (None: the run's own settings)."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    out = Path(out)
    if out.suffix != SUFFIX:
        raise PiroError(f"--out {out}: name the index NAME{SUFFIX}")
    previous = 0
    if out.exists():
        if not overwrite:
            raise PiroError(f"--out {out}: already exists; pass --overwrite to replace it, or choose another --out")
        if out.is_dir() and any(out.iterdir()):  # only an index is replaced, never other files
            if not (out / MANIFEST).is_file():
                raise PiroError(f"--out {out}: a folder that is not a piro index; choose another --out")
            previous = int(GalleryIndex(out).manifest.get("next_shard", 0))
    check_output_path(out, "--out", folder=True)
    if split not in ("train", "val", "test"):
        raise PiroError(f"--split {split!r}: choose train, val or test")
    from piro_cli.inference.run import load_run

    loaded = load_run(run, device, tta, tta_scales=tta_scales)
    store = loaded.open_data(data)
    source_split, rows = _index_rows(loaded, store, split)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _build(loaded, store, source_split, rows, split, out, previous, reporter, started)
    except BaseException:
        if created and not (out / MANIFEST).exists():  # nothing committed: no half-made index blocks a retry
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build(loaded, store, source_split, rows, split, out: Path, previous: int, reporter, started: float) -> IndexChange:
    from piro_cli.inference.cache import cached_embeddings

    with OutputLock(out, folder=True):
        reporter.info(f"{loaded.path}: embedding {store.path} {split} into {out}")
        group = cached_embeddings(loaded, store, source_split, rows, stage_progress(reporter, f"embedding {split}"))
        manifest, shard, arrays = _new_index(loaded, store, group, split, previous)
        commit_index(out, manifest, (shard, _shard_bytes(arrays, manifest["checkpoint"]["fingerprint"])))
    n = len(group.names)
    return IndexChange(out, n, len(arrays["view_object"]), time.perf_counter() - started, n, len(arrays["view_object"]), list(group.names))


def _new_index(loaded: LoadedRun, store, group: EmbeddedGroup, split: str, next_shard: int = 0) -> tuple[dict, str, dict]:
    """(manifest, shard name, shard arrays) of an index holding the embedded objects of a data split."""
    from piro_cli.inference.run import weights_fingerprint

    e = group.embeddings
    n, v = e.sv_obj.shape[:2]
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "piro_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": {
            "path": str(loaded.path.resolve()),
            "fingerprint": weights_fingerprint(loaded.checkpoint),
            "epoch": loaded.epoch,
            "model_config": loaded.checkpoint["model_config"],
            "cat_dim": int(e.sv_cat.shape[-1]),
            "obj_dim": int(e.sv_obj.shape[-1]),
            "image_size": loaded.image_size,
            "tta": loaded.tta,
            "tta_scales": list(loaded.tta_scales),
        },
        "data": {"path": str(store.path), "fingerprint": store.fingerprint, "split": split},
        "categories": list(store.categories),
        "objects": [],
        "shards": [],
        "threshold": None,
        "next_shard": next_shard,  # new shard names: the old index stays whole until the manifest is replaced
        "next_id": n,
    }
    shard = _next_shard(manifest)
    manifest["shards"] = [shard]
    manifest["objects"] = [
        IndexedObject(i, name, int(e.labels[i]), v, f"build: {store.path.name} {split}", shard).to_dict()
        for i, name in enumerate(group.names)
    ]
    ids = np.arange(n)
    arrays = {
        "view_object": np.repeat(ids, v), "set_object": ids,
        "sv_cat": as_matrix(e.sv_cat.reshape(n * v, -1)), "sv_obj": as_matrix(e.sv_obj.reshape(n * v, -1)),
        "mv_cat": as_matrix(e.mv_cat), "mv_obj": as_matrix(e.mv_obj),
    }  # fmt: skip
    return manifest, shard, arrays


def _index_rows(loaded: LoadedRun, store, split: str) -> tuple[str, np.ndarray | None]:
    """(data split, rows) an index of `split` holds; train: the objects the run trained on (its validation objects
    stay held out, for calibration)."""
    from piro_cli.inference.run import group_rows, trained_rows

    source_split, rows = group_rows(loaded.checkpoint, store, split)
    return source_split, (trained_rows(loaded.checkpoint, store) if split == "train" else rows)


def trained_gallery(loaded: LoadedRun, store, reporter: Reporter | None = None) -> GalleryIndex:
    """In memory, the index `piro index build RUN` writes: the objects the run trained on (open-set evaluation)."""
    from piro_cli.inference.cache import cached_embeddings

    reporter = reporter or SilentReporter()
    source_split, rows = _index_rows(loaded, store, "train")
    group = cached_embeddings(loaded, store, source_split, rows, stage_progress(reporter, f"{loaded.name}: embedding the gallery (train)"))
    manifest, shard, arrays = _new_index(loaded, store, group, "train")
    return GalleryIndex.in_memory(manifest, {shard: arrays}, f"<{loaded.name} train>")


@dataclass
class Enrolment:
    """One object to enrol: its name, category and photos."""

    name: str
    category: str
    photos: list[Path]


def enrolments_from_folder(folder: str | Path) -> list[Enrolment]:
    """A folder tree `category/object/*.jpg` -> one Enrolment per object folder."""
    root = Path(folder)
    if not root.is_dir():
        raise PiroError(
            f"{root}: no such folder; pass photos with --object NAME --category CAT, or a folder category/object/*.jpg"
        )
    found: list[Enrolment] = []
    for category in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for obj in sorted(p for p in category.iterdir() if p.is_dir() and not p.name.startswith(".")):
            photos = sorted(p for p in obj.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if photos:
                found.append(Enrolment(obj.name, category.name, photos))
    if not found:
        raise DataError(f"{root}: no photos found in a category/object/*.jpg layout; pass photos with --object and --category")
    return found


def _check_names(gallery: GalleryIndex, enrolments: Sequence[Enrolment]) -> None:
    taken = {o.name for o in gallery.objects}
    seen: set[str] = set()
    for item in enrolments:
        if not item.name.strip() or not item.category.strip():
            raise PiroError("--object and --category must not be empty")
        for what, text in (("--object", item.name), ("--category", item.category)):
            if any(unicodedata.category(c) == "Cc" for c in text):  # escape sequences would reach every terminal
                raise PiroError(f"{what} {text!r}: holds control characters; name objects and categories with printable text")
        if item.name == "unknown":
            raise PiroError("--object 'unknown': the answer `identify` gives for no enrolled object; choose another name")
        if item.name in taken:
            raise PiroError(
                f"--object {item.name!r}: already in {gallery.path}; remove it first with `piro index remove {gallery.path} {item.name}`"
            )
        if item.name in seen:
            raise PiroError(f"--object {item.name!r}: given twice; give each object once")
        seen.add(item.name)


def add_objects(
    index: str | Path,
    enrolments: Sequence[Enrolment],
    *,
    run: str | Path | None = None,
    device: str | None = None,
    skip_bad: bool = False,
    reporter: Reporter | None = None,
) -> IndexChange:
    """Enrol objects from their photos (no retraining): every object is checked and embedded, then all are
    written in one commit. A category the index does not know is added to it."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    gallery = GalleryIndex(index)
    if not enrolments:
        raise PiroError("nothing to add: pass --object NAME --category CAT and photos, or a folder category/object/*.jpg")
    _check_names(gallery, enrolments)
    with OutputLock(gallery.path, folder=True):
        gallery = GalleryIndex(index)  # re-read under the lock: another writer may have committed meanwhile
        _check_names(gallery, enrolments)
        loaded = gallery.load_run(run, device)
        from piro_cli.inference.embedding import embed_views

        manifest = gallery.manifest
        embedded: list[EnrolledEmbeddings] = []
        for done, item in enumerate(enrolments, 1):
            views, read, skipped = read_photos(item.photos, loaded.image_size, skip_bad)
            sv_cat, sv_obj, mv_cat, mv_obj = (t.numpy() for t in embed_views(loaded.model, views, loaded.device))
            for bad, reason in skipped:
                reporter.info(f"skipped {bad}: {reason}")
            embedded.append(EnrolledEmbeddings(item.name, item.category, f"add: {len(read)} photos", sv_cat, sv_obj, mv_cat, mv_obj))
            reporter.progress("embedding photos", done, len(enrolments))
        known = set(manifest["categories"])
        for category in dict.fromkeys(e.category for e in embedded if e.category not in known):
            reporter.info(f"new category {category!r}")
        before = len(manifest["objects"])
        shard, arrays = _enrol(manifest, embedded)
        new_objects = manifest["objects"][before:]
        view_rows = arrays["view_object"]
        commit_index(gallery.path, manifest, (shard, _shard_bytes(arrays, manifest["checkpoint"]["fingerprint"])))
    total = GalleryIndex(index)
    return IndexChange(
        total.path,
        len(new_objects),
        len(view_rows),
        time.perf_counter() - started,
        len(total.objects),
        total.num_views,
        [o["name"] for o in new_objects],
    )


def remove_objects(index: str | Path, names: Sequence[str], reporter: Reporter | None = None) -> IndexChange:
    """Remove objects by name; their shards are rewritten without them, in one commit."""
    started = time.perf_counter()
    gallery = GalleryIndex(index)
    names = list(dict.fromkeys(names))  # each once
    if not names:
        raise PiroError("nothing to remove: name the objects to remove")
    with OutputLock(gallery.path, folder=True):
        gallery = GalleryIndex(index)
        present = {o.name: o for o in gallery.objects}
        missing = [n for n in names if n not in present]
        if missing:
            close = ", ".join(sorted(present)[:5])
            raise PiroError(
                f"{missing[0]!r}: no such object in {gallery.path} (it holds {len(present)}: {close}, ...); see `piro index info`"
            )
        gone = {present[n].id for n in names}
        manifest = gallery.manifest
        touched = sorted({present[n].shard for n in names})
        replacement = {}
        for old in touched:
            arrays = gallery._read_shard(old)
            keep_views = ~np.isin(arrays["view_object"], list(gone))
            keep_sets = ~np.isin(arrays["set_object"], list(gone))
            if keep_sets.any():
                new = _next_shard(manifest)
                data = _shard_bytes(
                    {"view_object": arrays["view_object"][keep_views], "set_object": arrays["set_object"][keep_sets],
                     **{n: arrays[n][keep_views] for n in VIEW_FIELDS}, **{n: arrays[n][keep_sets] for n in SET_FIELDS}},
                    manifest["checkpoint"]["fingerprint"],
                )  # fmt: skip
                write_bytes(data, gallery.path / SHARDS / new, f"free space; {gallery.path} is unchanged")
                replacement[old] = new
            else:
                replacement[old] = None
        removed_views = sum(present[n].views for n in names)
        objects = []
        for obj in manifest["objects"]:
            if obj["id"] in gone:
                continue
            if obj["shard"] in replacement:
                obj = {**obj, "shard": replacement[obj["shard"]]}
            objects.append(obj)
        manifest["objects"] = objects
        manifest["shards"] = [replacement.get(s, s) for s in manifest["shards"] if replacement.get(s, s) is not None]
        commit_index(gallery.path, manifest)
    total = GalleryIndex(index)
    return IndexChange(
        total.path, len(gone), removed_views, time.perf_counter() - started, len(total.objects), total.num_views, list(names)
    )


# ----------------------------------------------------------------------------- identify


@dataclass
class Identification:
    images: list[str]
    skipped: list[tuple[str, str]]
    answer: dict
    model_seconds: float
    load_seconds: float = 0.0  # the index (manifest and vectors) and the run's model
    decode_seconds: float = 0.0  # reading and resizing the photos
    engine: str = "torch"  # what embedded the photos: the run's model, or the exported graphs in onnxruntime

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "engine": self.engine,
            "skipped": [{"image": i, "reason": r} for i, r in self.skipped],
            **{k: v for k, v in self.answer.items() if k != "search_seconds"},
            "seconds": {
                "load": round(self.load_seconds, 4), "decode": round(self.decode_seconds, 4),
                "model": round(self.model_seconds, 4), "search": round(self.answer["search_seconds"], 4),
            },
        }  # fmt: skip


class Identifier:
    """An index with the model that embeds photos for it (the run's, or the exported graphs in onnxruntime), loaded
    once: `identify` and `piro serve` answer through it. `reopen_if_changed` follows writes made by others."""

    def __init__(self, index: str | Path, run: str | Path | None = None, device: str | None = None, onnx: str | Path | None = None):
        if onnx is not None and (run is not None or device is not None):
            raise PiroError("--onnx embeds with the exported graphs on the CPU: leave out --run and --device")
        self.gallery = GalleryIndex(index)
        if onnx is None and run is None and device is None:
            onnx = bundled_graphs(self.gallery.path, self.gallery.checkpoint)
        self.engine = "onnx" if onnx is not None else "torch"
        if onnx is not None:
            from piro_cli.inference.onnx_engine import OnnxEmbedder

            engine = OnnxEmbedder.open(onnx)
            engine.check_index(self.gallery.checkpoint, self.gallery.path)
            self.image_size, self._embed, self._embed_each = engine.image_size, engine.embed, engine.embed_each
        else:
            from piro_cli.inference.embedding import embed_each_photo, embed_views

            loaded = self.gallery.load_run(run, device)
            self.image_size = loaded.image_size

            def embed(views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                sv_cat, sv_obj, _, mv_obj = embed_views(loaded.model, views, loaded.device)
                return sv_cat.numpy(), sv_obj.numpy(), mv_obj.numpy()

            def embed_each(views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                return tuple(t.numpy() for t in embed_each_photo(loaded.model, views, loaded.device))

            self._embed, self._embed_each = embed, embed_each
        self.gallery._searchable()  # the vectors, loaded now: their time is load time, not search time

    def embed(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (V, S, S, 3) photos of one view set -> sv_cat (V, Dc), sv_obj (V, Do), mv_obj (Do,)."""
        return self._embed(views)

    def answer(self, views: np.ndarray, top: int = 5, threshold: float | None = None) -> tuple[dict, float]:
        """(the answer for one view set of photos, the model's seconds)."""
        check_answer_options(top, threshold)
        started = time.perf_counter()
        sv_cat, sv_obj, mv_obj = self.embed(views)
        model_seconds = time.perf_counter() - started
        return self.gallery.identify(sv_cat, sv_obj, mv_obj, top=top, threshold=threshold), model_seconds

    def embed_each(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (N, S, S, 3) photos, each its own view set, in one batch -> sv_cat (N, Dc), sv_obj (N, Do), mv_obj (N, Do)."""
        return self._embed_each(views)

    def answer_each(self, views: np.ndarray, top: int = 5, threshold: float | None = None) -> list[dict]:
        """One answer per photo, each photo its own query (`GalleryIndex.identify_each`), embedded in one batch."""
        check_answer_options(top, threshold)
        sv_cat, sv_obj, mv_obj = self.embed_each(views)
        return self.gallery.identify_each(sv_cat, sv_obj, mv_obj, top=top, threshold=threshold)

    def reopen_if_changed(self) -> bool:
        """Read the index again when another process (or this one) committed a change; True if it did. The model
        stays, so an index rebuilt since with other weights (or flips, dimensions, image size) is refused."""
        if not self.gallery.replaced_on_disk():
            return False
        gallery = GalleryIndex(self.gallery.path)
        tied = ("fingerprint", "tta", "cat_dim", "obj_dim", "image_size")
        if any(gallery.checkpoint.get(k) != self.gallery.checkpoint.get(k) for k in tied) or recorded_tta_scales(
            gallery.checkpoint
        ) != recorded_tta_scales(self.gallery.checkpoint):
            raise PiroError(
                f"{gallery.path}: was rebuilt with other weights since this process loaded its model; start it again"
            )
        gallery._searchable()
        self.gallery = gallery
        return True


BUNDLED_GRAPHS = "model.onnx"  # `piro export RUN --onnx INDEX/model.onnx`: the graphs identify uses by default


def bundled_graphs(index: Path, checkpoint: dict) -> Path | None:
    """The index's own exported graphs, when it holds them, they were exported from its weights with its flips (an
    index rebuilt from another run keeps the old graphs) and onnxruntime is installed; else None: the run's model."""
    graphs = index / BUNDLED_GRAPHS
    if not graphs.is_file():
        return None
    import importlib.util

    try:
        record = json.loads(graphs.with_suffix(".json").read_text())
        own = (
            record["fingerprint"] == checkpoint["fingerprint"]
            and record["tta"] == bool(checkpoint.get("tta", False))
            and recorded_tta_scales(record) == recorded_tta_scales(checkpoint)
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return graphs if own and importlib.util.find_spec("onnxruntime") is not None else None


def _manifest_stamp(path: Path) -> tuple:
    stat = (path / MANIFEST).stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def check_answer_options(top: int, threshold: float | None) -> None:
    if top < 1:
        raise PiroError(f"--top {top}: give at least 1")
    if threshold is not None and not (threshold >= 0):
        raise PiroError(f"--threshold {threshold}: give a score of 0 or more (the index's scoring rule's; see `piro index info`)")


def identify(
    index: str | Path,
    photos: Sequence[str | Path],
    *,
    top: int = 5,
    threshold: float | None = None,
    run: str | Path | None = None,
    device: str | None = None,
    skip_bad: bool = False,
    onnx: str | Path | None = None,
) -> Identification:
    """Which category and which enrolled object the photos (one view set) show, or `unknown` (module docstring).
    `onnx`: embed with the graphs `piro export --onnx` wrote, in onnxruntime, instead of the run's model (no
    torch: a fresh process answers in about a second); by default the index's own graphs (`bundled_graphs`) when
    it holds them, else the run's model. Each stage is timed on its own: loading (index vectors and
    model), decoding the photos, the model, the search."""
    check_answer_options(top, threshold)
    started = time.perf_counter()
    identifier = Identifier(index, run, device, onnx)
    decoding = time.perf_counter()
    views, read, skipped = read_photos(photos, identifier.image_size, skip_bad)
    embedding = time.perf_counter()
    answer, model_seconds = identifier.answer(views, top, threshold)
    return Identification(read, skipped, answer, model_seconds, decoding - started, embedding - decoding, identifier.engine)
