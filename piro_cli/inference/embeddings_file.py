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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from piro_cli import __version__
from piro_cli.data.store import category_label_problem, open_hdf5
from piro_cli.errors import DataError, PiroError
from piro_cli.inference.cache import cached_embeddings
from piro_cli.inference.embedding import EmbeddedGroup
from piro_cli.inference.run import group_rows, load_run
from piro_cli.models.embedding import FIELDS, EmbeddingSet
from piro_cli.outputs import AtomicFile, OutputLock, check_output_path
from piro_cli.reporting import Reporter, SilentReporter, stage_progress

FORMAT_NAME = "piro-embeddings"
FORMAT_VERSION = 1
GROUPS = ("train", "val", "test")

_STR = h5py.string_dtype(encoding="utf-8")


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


# ----------------------------------------------------------------------------- `piro embed`


@dataclass
class EmbedResult:
    path: Path
    groups: dict[str, int]  # group -> objects
    seconds: float


def embed(
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    data: str | Path | None = None,
    splits: str | Sequence[str] = "test",
    device: str | None = None,
    overwrite: bool = False,
    tta: bool | None = None,
    reporter: Reporter | None = None,
) -> EmbedResult:
    """Embed every object of the given splits (train, val, test) into an embeddings file (layout: the module docstring).

    Default `out`: `<run folder>/embeddings_<splits>.h5`."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    groups = _parse_groups(splits)
    run = load_run(checkpoint, device, tta)
    store = run.open_data(data)
    path = Path(out) if out is not None else run.folder / f"embeddings_{'_'.join(groups)}.h5"
    if path.suffix.lower() not in (".h5", ".hdf5"):
        raise PiroError(f"--out {path}: embeddings files are HDF5; use a .h5 file name")
    check_output_path(path, "--out", overwrite)
    plans = {g: group_rows(run.checkpoint, store, g) for g in groups}  # every split checked before any work
    with OutputLock(path):  # a second `piro embed` to the same file refuses instead of racing this one
        reporter.info(f"{run.path}: epoch {run.epoch if run.epoch is not None else '?'}, data {store.path}, device {run.device}")
        embedded: dict[str, EmbeddedGroup] = {}
        for group, (split, rows) in plans.items():
            embedded[group] = cached_embeddings(run, store, split, rows, stage_progress(reporter, f"embedding {group}"))
        meta = {
            "checkpoint": str(run.path),
            "checkpoint_epoch": int(run.epoch or 0),
            "model_config": run.checkpoint["model_config"],
            "data_path": str(store.path),
            "data_fingerprint": store.fingerprint,
            "source_dataset": store.source_dataset,
            "num_views": store.num_views,
            "image_size": store.image_size,
            "tta": run.tta,
            "tta_scales": list(run.tta_scales),
        }
        write_embeddings(path, embedded, store.categories, meta, overwrite=overwrite)
    return EmbedResult(path, {g: len(e.names) for g, e in embedded.items()}, time.perf_counter() - started)


def _parse_groups(splits: str | Sequence[str]) -> list[str]:
    items = [s.strip() for part in ([splits] if isinstance(splits, str) else splits) for s in part.split(",") if s.strip()]
    if "all" in items:
        items = ["train", "val", "test"]
    bad = [s for s in items if s not in ("train", "val", "test")]
    if bad or not items:
        raise PiroError(f"--split {bad[0] if bad else ''!r}: choose train, val, test (comma-separated) or all")
    return [g for g in ("train", "val", "test") if g in items]
