"""Embeddings from a checkpoint: of a whole split (into an embeddings file), or of one new object's photos.

Embeddings file (`piro embed CKPT --out FILE.h5`), HDF5, float32, every embedding L2-normalised::

    /                      attrs: format = "piro-embeddings", format_version = 1, piro_version, created_at,
                                  checkpoint (path), checkpoint_epoch, model_config (JSON), data_path,
                                  data_fingerprint, source_dataset, num_views, image_size
    /categories            (C,) utf-8 str     category names, index order (the checkpoint's = the data file's)
    /<group>               attrs: source_split (the data file's split the rows come from)
    /<group>/sv_cat        (N, V, Dc) float32 single-view category embeddings, views in capture order
    /<group>/sv_obj        (N, V, Do) float32 single-view object embeddings
    /<group>/mv_cat        (N, Dc) float32    multi-view category embedding c_mv (all V views)
    /<group>/mv_obj        (N, Do) float32    multi-view object embedding o_mv (all V views)
    /<group>/mv_obj_first  (N, Do) float32    o_mv of views [:V//2] (MV object tasks: the gallery)
    /<group>/mv_obj_last   (N, Do) float32    o_mv of views [V//2:] (MV object tasks: the queries)
    /<group>/category      (N,) int32         category index of each object
    /<group>/object_name   (N,) utf-8 str
    /<group>/object_index  (N,) int64         row of the object in the data file's `source_split`

`<group>` is `train`, `test` or `val`. `val` holds the validation objects of the checkpoint's run: the
data file's own `val` split, or the objects its `--val-fraction` carved out of `train` (then
`source_split` is `train` and `object_index` says which rows). In a single-space (PiRO-SE) model the
category and object embeddings are the same vectors, stored under both names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from piro_cli import __version__
from piro_cli.data.sources.base import IMAGE_SUFFIXES, read_image
from piro_cli.data.store import ViewSetStore, category_label_problem, normalize_views, open_hdf5
from piro_cli.errors import BadItemError, DataError, PiroError
from piro_cli.evaluation.metrics import KNN_VOTES, rank
from piro_cli.evaluation.picr import EmbeddingSet
from piro_cli.features import _autocast, embed_features
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.outputs import AtomicFile, check_output_path

FORMAT_NAME = "piro-embeddings"
FORMAT_VERSION = 1
GROUPS = ("train", "val", "test")
FIELDS = ("sv_cat", "sv_obj", "mv_cat", "mv_obj", "mv_obj_first", "mv_obj_last")

Progress = Callable[[int, int], None]
_STR = h5py.string_dtype(encoding="utf-8")


@dataclass
class EmbeddedGroup:
    """The embeddings of some objects of one data split, with who they are."""

    embeddings: EmbeddingSet
    names: list[str]
    object_index: np.ndarray  # rows in the data file's `source_split`
    source_split: str


# ----------------------------------------------------------------------------- the model of a checkpoint


def run_tta(checkpoint: dict) -> bool:
    """The run's own test-time-flip setting (`piro train --tta`, or its recipe's); off for runs from before it."""
    return bool((checkpoint.get("train_config") or {}).get("tta"))


def load_model(checkpoint: dict, device: torch.device, tta: bool | None = None) -> PAN:
    """The checkpoint's PAN in eval mode on `device` (no ImageNet download: the saved weights replace them); `tta`:
    each view embedded as the mean with its horizontal mirror (PAN.flip_views); None: the run's setting (run_tta)."""
    try:
        config = PANConfig.from_dict({**checkpoint["model_config"], "pretrained": False})
        model = PAN(config)
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise PiroError(
            f"{checkpoint.get('path', 'checkpoint')}: the model in it cannot be rebuilt ({exc}); is it from this piro version?"
        ) from exc
    model = model.to(device).eval()
    model.flip_views = run_tta(checkpoint) if tta is None else tta
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def check_categories(checkpoint: dict, store: ViewSetStore) -> None:
    """The checkpoint must have been trained on the categories the data file holds, in the same order."""
    trained = list(checkpoint.get("categories", []))
    if trained != list(store.categories):
        raise DataError(
            f"{checkpoint['path']} was trained on {len(trained)} categories ({_preview(trained)}) but {store.path} holds "
            f"{len(store.categories)} ({_preview(store.categories)}); pass the data file the model was trained on with --data"
        )


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(list(names)[:3])
    return shown + (", ..." if len(names) > 3 else "") if names else "none"


def batch_views_for(device: torch.device, image_size: int) -> int:
    """Views per backbone batch: 64 on a CPU; on a GPU as many as a quarter of its free memory allows (up to 1024)."""
    if device.type != "cuda":
        return 64
    free, _ = torch.cuda.mem_get_info(device)
    per_view = image_size * image_size * 3 * 4 * 60  # input plus a generous allowance for activations
    return int(max(64, min(1024, free // 4 // per_view)))


# ----------------------------------------------------------------------------- a split


@torch.no_grad()
def embed_objects(
    model: PAN,
    store: ViewSetStore,
    split: str,
    indices: Sequence[int] | None,
    device: torch.device,
    progress: Progress | None = None,
) -> EmbeddedGroup:
    """Embeddings of the given objects (default: all) of one split, streamed in batches sized to the device."""
    data = store.split(split)
    rows = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    per_batch = max(1, batch_views_for(device, store.image_size) // max(1, store.num_views))
    parts: list[EmbeddingSet] = []
    for start in range(0, len(rows), per_batch):
        chunk = rows[start : start + per_batch]
        block = np.stack([data.views_uint8(int(i)) for i in chunk])
        views = normalize_views(block, device)
        with _autocast(device):
            feats = model.features(views)
        parts.append(embed_features(model, feats.float(), torch.as_tensor(data.category[chunk]), device))
        if progress is not None:
            progress(min(start + per_batch, len(rows)), len(rows))
    embeddings = _concat(parts, torch.as_tensor(data.category[rows]), model)
    return EmbeddedGroup(embeddings, [data.object_names[i] for i in rows], rows, split)


def _concat(parts: list[EmbeddingSet], labels: torch.Tensor, model: PAN) -> EmbeddingSet:
    if not parts:
        dc = model.config.cat_dim if model.config.dual else model.config.obj_dim
        do = model.config.obj_dim
        empty = EmbeddingSet(
            torch.empty(0, 0, dc), torch.empty(0, 0, do), torch.empty(0, dc), torch.empty(0, do), torch.empty(0, do),
            torch.empty(0, do), labels,
        )  # fmt: skip
        return empty
    return EmbeddingSet(*(torch.cat([getattr(p, f) for p in parts]) for f in FIELDS), labels.long())


def group_rows(checkpoint: dict, store: ViewSetStore, group: str) -> tuple[str, np.ndarray | None]:
    """(data split, rows or None for all) behind an embeddings group: val is the checkpoint run's validation objects."""
    if group != "val":
        store.split(group)  # a clear error when the data file lacks it
        return group, None
    val = (checkpoint.get("data") or {}).get("val")
    if not val:
        if "val" in store.splits:
            return "val", None
        raise DataError(
            f"{checkpoint['path']}: its run has no validation objects and {store.path} has no 'val' split; "
            "train with --val-fraction (e.g. 0.2) to carve some out of train"
        )
    check_same_data(checkpoint, store)
    return val["split"], np.asarray(val["indices"], dtype=np.int64)


def check_same_data(checkpoint: dict, store: ViewSetStore) -> None:
    recorded = (checkpoint.get("data") or {}).get("fingerprint")
    if recorded and recorded != store.fingerprint:
        raise DataError(
            f"{store.path} is not the file {checkpoint['path']} was trained on (fingerprint {store.fingerprint}, trained on "
            f"{recorded}); the validation objects are recorded by row: pass the original file with --data"
        )


# ----------------------------------------------------------------------------- the embeddings file


def write_embeddings(
    path: Path, groups: dict[str, EmbeddedGroup], categories: Sequence[str], meta: dict, overwrite: bool = False
) -> Path:
    """Write an embeddings file atomically (piro_cli.outputs: a temporary file renamed into place)."""
    path = check_output_path(path, "--out", overwrite)
    # HDF5 writes through AtomicFile, which keeps a failed write (a full disk) from HDF5 and raises it on commit
    with AtomicFile(path, reads_back=True) as target:
        with h5py.File(target, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["piro_version"] = __version__
            f.attrs["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for key, value in meta.items():
                f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else ("" if value is None else value)
            f.create_dataset("categories", data=np.array(list(categories), dtype=object), dtype=_STR)
            for name, group in groups.items():
                g = f.create_group(name)
                g.attrs["source_split"] = group.source_split
                for field_name in FIELDS:
                    g.create_dataset(field_name, data=getattr(group.embeddings, field_name).float().cpu().numpy())
                g.create_dataset("category", data=group.embeddings.labels.cpu().numpy().astype(np.int32))
                g.create_dataset("object_name", data=np.array(group.names, dtype=object), dtype=_STR)
                g.create_dataset("object_index", data=np.asarray(group.object_index, dtype=np.int64))
    return path


def is_embeddings_file(path: str | Path) -> bool:
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        handle = h5py.File(path, "r")
    except OSError:  # a truncated or damaged HDF5 file: not one to read embeddings from
        return False
    with handle as f:
        return f.attrs.get("format") == FORMAT_NAME


class EmbeddingsFile:
    """Read access to an embeddings file; arrays are loaded on request, only the fields asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file; write one with `piro embed CKPT --out {self.path}`")
        with open_hdf5(self.path, "a file written by `piro embed`") as f:
            if f.attrs.get("format") != FORMAT_NAME:
                raise DataError(f"{self.path}: not a piro embeddings file (no '{FORMAT_NAME}' tag); write one with `piro embed`")
            if int(f.attrs.get("format_version", 0)) > FORMAT_VERSION:
                raise DataError(f"{self.path}: written by a newer piro; upgrade piro to read it")
            self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            categories = f.get("categories")
            if not isinstance(categories, h5py.Dataset) or categories.ndim != 1 or len(categories) == 0:
                raise self._malformed("'categories'", "missing or not a 1-D list of names")
            self.categories = [_str(s) for s in categories[:]]
            self.groups = [g for g in GROUPS if g in f]
            for group in self.groups:
                self._check_group(f, group)
            self._sources = {g: str(f[g].attrs.get("source_split", g)) for g in self.groups}

    # Checked on opening from shapes and labels only (no embedding is read): an edited or foreign file is refused,
    # not evaluated into silently wrong numbers.

    def _malformed(self, where: str, problem: str) -> DataError:
        return DataError(f"{self.path}: {where}: {problem}; not a valid piro embeddings file, write it again with `piro embed`")

    def _check_group(self, f: h5py.File, group: str) -> None:
        g = f[group]
        if not isinstance(g, h5py.Group):
            raise self._malformed(f"'{group}'", "is not a group of embeddings")
        for name in (*FIELDS, "category", "object_name", "object_index"):
            if not isinstance(g.get(name), h5py.Dataset):
                raise self._malformed(f"'{group}'", f"'{name}' is missing")
        rows = len(g["category"]) if g["category"].ndim == 1 else -1
        for name in (*FIELDS, "category", "object_name", "object_index"):
            expected_ndim = 3 if name.startswith("sv_") else 2 if name in FIELDS else 1
            if g[name].ndim != expected_ndim or g[name].shape[0] != rows:
                raise self._malformed(
                    f"'{group}' {name}", f"shape {g[name].shape}, expected {expected_ndim} dimensions and {rows} rows"
                )
            if name in FIELDS and g[name].dtype.kind != "f":
                raise self._malformed(f"'{group}' {name}", f"dtype {g[name].dtype}, expected float embeddings")
        views = int(self.attrs.get("num_views", g["sv_cat"].shape[1]))
        for name in ("sv_cat", "sv_obj"):
            if g[name].shape[1] != views:
                raise self._malformed(f"'{group}' {name}", f"{g[name].shape[1]} views per object, but the file says {views}")
        for single, multi in (("sv_cat", ("mv_cat",)), ("sv_obj", ("mv_obj", "mv_obj_first", "mv_obj_last"))):
            for name in multi:
                if g[name].shape[-1] != g[single].shape[-1]:
                    raise self._malformed(
                        f"'{group}' {name}", f"{g[name].shape[-1]} dimensions, but {single} has {g[single].shape[-1]}"
                    )
        problem = category_label_problem(g["category"], len(self.categories))
        if problem is not None:
            raise self._malformed(f"'{group}' category", problem)

    def source_split(self, group: str) -> str:
        return self._sources[group]

    def require(self, group: str, hint: str = "") -> None:
        if group not in self.groups:
            have = ", ".join(self.groups) or "none"
            raise DataError(
                f"{self.path}: has no '{group}' embeddings (it has: {have}); write them with "
                f"`piro embed CKPT --split {','.join(sorted({*self.groups, group}, key=GROUPS.index))} --out {self.path} --overwrite`{hint}"
            )

    def load(self, group: str, fields: Sequence[str] = FIELDS, rows: np.ndarray | None = None) -> EmbeddedGroup:
        """One group, with only `fields` read (the others None); `rows` selects objects (positions in the group)."""
        self.require(group)
        with h5py.File(self.path, "r") as f:
            g = f[group]
            select = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
            values = {name: (torch.from_numpy(np.asarray(g[name][select])) if name in fields else None) for name in FIELDS}
            labels = torch.from_numpy(np.asarray(g["category"][select], dtype=np.int64))
            names = [_str(s) for s in g["object_name"][select]]
            index = np.asarray(g["object_index"][select], dtype=np.int64)
        return EmbeddedGroup(EmbeddingSet(**values, labels=labels), names, index, self._sources[group])

    def object_index(self, group: str) -> np.ndarray:
        self.require(group)
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[group]["object_index"][:], dtype=np.int64)


def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------- one new object's photos


@dataclass
class AdhocResult:
    """Embeddings of one view set of photos, and (with a gallery) its nearest categories and objects."""

    images: list[str]  # the photos embedded, in order
    sv_cat: torch.Tensor  # (V, Dc)
    sv_obj: torch.Tensor  # (V, Do)
    mv_cat: torch.Tensor  # (Dc,)
    mv_obj: torch.Tensor  # (Do,)
    categories: list[dict] = field(default_factory=list)  # {category, votes, distance}, best first
    objects: list[dict] = field(default_factory=list)  # {object, category, distance}, nearest first
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason): unreadable, left out (--skip-bad)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "skipped": [{"image": image, "reason": reason} for image, reason in self.skipped],
            "sv_cat": self.sv_cat.tolist(),
            "sv_obj": self.sv_obj.tolist(),
            "mv_cat": self.mv_cat.tolist(),
            "mv_obj": self.mv_obj.tolist(),
            "nearest_categories": self.categories,
            "nearest_objects": self.objects,
        }


def read_photos(
    paths: Sequence[str | Path], size: int, skip_bad: bool = False
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """The photos as uint8 (V, size, size, 3), resized like `piro prepare` does, the paths read, and the
    (path, reason) of the photos left out: a photo that cannot be read is an error, or with `skip_bad` left out."""
    views, read, skipped = [], [], []
    for raw in paths:
        try:
            views.append(_read_photo(Path(raw), size))
        except BadItemError as exc:
            if not skip_bad:
                raise
            skipped.append((exc.path, exc.reason))
        else:
            read.append(str(raw))
    if skipped and not views:
        raise DataError(f"none of the photos can be read; the first: {skipped[0][0]}: {skipped[0][1]}")
    if not views:
        raise DataError("no photos given: pass one or more image files after --images")
    return np.stack(views), read, skipped


def _read_photo(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        raise BadItemError(str(path), "no such image file", fix="check the path")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise BadItemError(str(path), "not an image file name", fix=f"pass image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return read_image(path, size)


@torch.no_grad()
def embed_photos(
    model: PAN, paths: Sequence[str | Path], image_size: int, device: torch.device, skip_bad: bool = False
) -> AdhocResult:
    """All embeddings of one object's photos (one view set, in the order given); `skip_bad` leaves out the
    photos that cannot be read (AdhocResult.skipped) instead of raising."""
    views, read, skipped = read_photos(paths, image_size, skip_bad)
    with _autocast(device):
        out = model(normalize_views(views[None], device))
    return AdhocResult(
        images=read,
        sv_cat=out.sv_cat[0].float().cpu(),
        sv_obj=out.sv_obj[0].float().cpu(),
        mv_cat=out.mv_cat[0].float().cpu(),
        mv_obj=out.mv_obj[0].float().cpu(),
        skipped=skipped,
    )


def nearest_in_gallery(result: AdhocResult, gallery: EmbeddedGroup, categories: Sequence[str], top: int = 5) -> AdhocResult:
    """Fill `result.categories` (10-NN vote of c_mv among the gallery objects' c_mv, as in MV category
    recognition) and `result.objects` (gallery objects nearest in the object space, o_mv)."""
    g = gallery.embeddings
    labels = g.labels.long()
    found = rank(result.mv_cat[None], g.mv_cat, k=KNN_VOTES).neighbours[0]
    distances = torch.cdist(result.mv_cat[None], g.mv_cat[found])[0]
    votes: dict[int, list] = {}
    for position, (item, distance) in enumerate(zip(found.tolist(), distances.tolist(), strict=True)):
        entry = votes.setdefault(int(labels[item]), [0, position, distance])
        entry[0] += 1
    ordered = sorted(votes.items(), key=lambda kv: (-kv[1][0], kv[0]))  # as `vote` decides: ties to the smaller index
    result.categories = [
        {"category": categories[c], "votes": v[0], "of": len(found), "distance": round(v[2], 4)} for c, v in ordered[:top]
    ]
    nearest = rank(result.mv_obj[None], g.mv_obj, k=top).neighbours[0]
    distances = torch.cdist(result.mv_obj[None], g.mv_obj[nearest])[0]
    result.objects = [
        {"object": gallery.names[i], "category": categories[int(labels[i])], "distance": round(float(d), 4)}
        for i, d in zip(nearest.tolist(), distances.tolist(), strict=True)
    ]
    return result
