"""The HDF5 view-set store: one file per dataset, one group per split.

Layout (see data/README.md for the field-by-field description)::

    /                       attrs: format, format_version, piro_version, source_dataset,
                                   image_size, num_views, created_at, creation_options (JSON),
                                   fingerprint
    /categories             (C,) str      category names, index order
    /<split>/images         (N, V, S, S, 3) uint8, one chunk per object (random access by object)
    /<split>/category       (N,) int32    index into /categories
    /<split>/object_name    (N,) str
    /<split>/source_path    (N,) str

Writes go to a temporary file beside the target that is renamed over it only
when complete (piro_cli.outputs), so an interrupted `piro prepare` or a full
disk never leaves a file that looks finished and never damages an existing one;
the target is locked while it is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from piro_cli import __version__
from piro_cli.errors import DataError
from piro_cli.outputs import AtomicFile, OutputLock, check_output_path, write_error

if TYPE_CHECKING:  # torch is imported where views become tensors, so that `piro --help` starts fast
    import torch

FORMAT_NAME = "piro-viewsets"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
COMPRESSIONS = ("none", "lzf", "gzip")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_STR = h5py.string_dtype(encoding="utf-8")


def normalize_views(images: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> contiguous float32 (..., 3, H, W), ImageNet mean/std normalised.

    The conversion runs on `device` (after a uint8 transfer, 4x cheaper than
    moving floats) so that on a GPU the host only ever touches bytes.
    """
    import torch

    source = torch.as_tensor(images).to(device=device)
    out = torch.empty((*source.shape[:-3], 3, *source.shape[-3:-1]), dtype=torch.float32, device=source.device)
    return normalize_into(out, source)


def normalize_into(out: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Write normalised `source` (uint8 (..., H, W, 3)) into `out` (float32 (..., 3, H, W)) and return it.

    On a CPU each slab of at most ~4 MiB of output is converted, scaled and
    shifted while it is still in cache: several times faster than three passes
    over one large batch.
    """
    import torch

    source = source.movedim(-1, -3)
    scale = (1.0 / (torch.tensor(IMAGENET_STD, device=out.device) * 255.0)).view(3, 1, 1)
    shift = (-torch.tensor(IMAGENET_MEAN, device=out.device) / torch.tensor(IMAGENET_STD, device=out.device)).view(3, 1, 1)
    if out.device.type != "cpu" or out.dim() <= 3:
        return out.copy_(source).mul_(scale).add_(shift)
    flat_source, flat_out = source.reshape(-1, *source.shape[-3:]), out.view(-1, *out.shape[-3:])
    step = max(1, (4 << 20) // (flat_out[0].numel() * 4))
    for start in range(0, len(flat_out), step):
        flat_out[start : start + step].copy_(flat_source[start : start + step]).mul_(scale).add_(shift)
    return out


# ----------------------------------------------------------------------------- writing


class StoreWriter:
    """Builds a store in a temporary file and moves it into place on `commit()`.

    Use as a context manager: leaving the block by an exception (including
    Ctrl-C) deletes the temporary file and leaves any existing target intact.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        categories: Sequence[str],
        num_views: int,
        image_size: int,
        source_dataset: str,
        creation_options: dict,
        compression: str = "none",
        overwrite: bool = False,
    ) -> None:
        self.path = check_output_path(path, "--out", overwrite)
        if compression not in COMPRESSIONS:
            raise DataError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
        self.num_views = num_views
        self.image_size = image_size
        self._compression = None if compression == "none" else compression
        self._counts: dict[str, int] = {}
        self._datasets: dict[str, dict[str, h5py.Dataset]] = {}
        self._lock = OutputLock(self.path)
        try:
            self._target = AtomicFile(self.path, reads_back=True)
        except BaseException:
            self._lock.release()
            raise
        self.tmp_path = self._target.temp_path
        self._file: h5py.File | None = None
        # Every stored pixel, hashed while writing (no second pass): the fingerprint changes with the images.
        self._content = hashlib.sha256()
        try:
            # HDF5 writes through AtomicFile, which keeps a failed write (a full disk) from HDF5; see _check
            self._file = root = h5py.File(self._target, "w")
            root.attrs["format"] = FORMAT_NAME
            root.attrs["format_version"] = FORMAT_VERSION
            root.attrs["piro_version"] = __version__
            root.attrs["source_dataset"] = source_dataset
            root.attrs["image_size"] = image_size
            root.attrs["num_views"] = num_views
            root.attrs["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            root.attrs["creation_options"] = json.dumps(creation_options, sort_keys=True, default=str)
            root.create_dataset("categories", data=np.array(list(categories), dtype=object), dtype=_STR)
        except BaseException:
            self.abort()
            raise
        self._categories = list(categories)
        self._check()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _split_group(self, split: str) -> h5py.Group:
        if split in self._file:
            return self._file[split]
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        group = self._file.create_group(split)
        size, views = self.image_size, self.num_views
        group.create_dataset(
            "images",
            shape=(0, views, size, size, 3),
            maxshape=(None, views, size, size, 3),
            chunks=(1, views, size, size, 3),
            dtype=np.uint8,
            compression=self._compression,
        )
        group.create_dataset("category", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(4096,))
        for name in ("object_name", "source_path"):
            group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=_STR, chunks=(4096,))
        self._counts[split] = 0
        # kept open until the file closes: a dataset handle freed mid-way would flush its chunks from a destructor
        self._datasets[split] = {key: group[key] for key in ("images", "category", "object_name", "source_path")}
        return group

    def append(self, split: str, images: np.ndarray, category: int, name: str, source_path: str) -> None:
        """Add one object: `images` is uint8 (V, S, S, 3) in capture order."""
        expected = (self.num_views, self.image_size, self.image_size, 3)
        if images.shape != expected or images.dtype != np.uint8:
            raise ValueError(f"object {name!r}: views have shape {images.shape} {images.dtype}, expected {expected} uint8")
        self._split_group(split)
        datasets = self._datasets[split]
        row = self._counts[split]
        for dataset in datasets.values():
            dataset.resize(row + 1, axis=0)
        datasets["images"][row] = images
        datasets["category"][row] = category
        datasets["object_name"][row] = name
        datasets["source_path"][row] = source_path
        self._counts[split] = row + 1
        self._content.update(split.encode() + b"\0")
        self._content.update(np.ascontiguousarray(images).data)
        self._check()

    def commit(self) -> Path:
        """Finish the file and atomically move it onto the target path (fsynced, then renamed)."""
        try:
            self._file.attrs["content_sha256"] = self._content.hexdigest()
            self._file.attrs["fingerprint"] = _fingerprint(self._file)
            self._datasets.clear()
            self._file.close()
            self._check()
            return self._target.commit()
        except BaseException:
            self.abort()
            raise
        finally:
            self._lock.release()

    def _check(self) -> None:
        """Stop at the first failed write (a full disk): drop the file and raise the error as one line."""
        if self._target.error is not None:
            error = self._target.error
            self.abort()
            raise write_error(self.path, error) from None

    def abort(self) -> None:
        """Drop the temporary file; the target path is untouched. Safe to call more than once."""
        self.tmp_path.unlink(missing_ok=True)  # first: nothing is left behind even if closing fails
        self._datasets.clear()
        try:
            if self._file is not None and self._file.id.valid:
                self._file.close()
        except Exception:  # the file is being dropped: HDF5's complaint about closing it adds nothing
            pass
        finally:
            self._target.discard()
            self._lock.release()


# creation options that say where the raw data was and how the file stores it, not what it holds
_LOCATION_OPTIONS = ("raw_dir", "compression", "skip_bad")


def _fingerprint(root: h5py.Group) -> str:
    """A short hash of what a dataset holds: categories, view count, size, object names and labels per split,
    every pixel (`content_sha256`) and the options that made them (e.g. --up-axis); computed once, at commit.

    Files written before `content_sha256` keep the fingerprint recorded in them (names and labels only), so the
    checkpoints and feature caches that recorded it stay valid; re-preparing such a file gives it a new one.
    """
    digest = hashlib.sha256()
    for key in ("source_dataset", "image_size", "num_views"):
        digest.update(str(root.attrs[key]).encode())
    digest.update("\n".join(_strings(root["categories"])).encode())
    for split in SPLITS:
        if split in root:
            digest.update(split.encode())
            digest.update("\n".join(_strings(root[split]["object_name"])).encode())
            digest.update(np.asarray(root[split]["category"][:], dtype=np.int32).tobytes())
    options = json.loads(root.attrs["creation_options"])
    made_by = {k: v for k, v in options.items() if k not in _LOCATION_OPTIONS}
    digest.update(json.dumps(made_by, sort_keys=True, default=str).encode())
    digest.update(str(root.attrs["content_sha256"]).encode())
    return digest.hexdigest()[:16]


def category_label_problem(labels: h5py.Dataset, num_categories: int) -> str | None:
    """What is wrong with a stored `category` array (its dtype, an index outside 0..C-1), or None: the label check
    shared by view-set and embeddings files."""
    if not np.issubdtype(labels.dtype, np.integer):
        return f"dtype {labels.dtype}, expected integer category indices"
    values = labels[:]
    if len(values) and (values.min() < 0 or values.max() >= num_categories):
        bad = int(values.min()) if values.min() < 0 else int(values.max())
        return f"index {bad} is outside the {num_categories} categories (0..{num_categories - 1})"
    return None


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in dataset[:]]


# ----------------------------------------------------------------------------- reading


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def open_hdf5(path: Path, expected: str) -> h5py.File:
    """Open `path` for reading; a file that is not (or no longer) a whole HDF5 file gives one line, not HDF5's dump.

    `expected` ends the message: what to pass instead (e.g. "a file written by `piro prepare`").
    """
    try:
        # No chunk cache: reads are whole chunks (one object each), which HDF5 then copies
        # straight into the destination; a cache only adds a copy (measured 2x slower).
        return h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as exc:
        if path.is_dir():
            reason = "is a directory"
        elif not h5py.is_hdf5(path):
            reason = "not an HDF5 file"
        elif "truncated" in str(exc):
            reason = "truncated: the file is shorter than HDF5 recorded (an interrupted copy or download?)"
        else:
            reason = f"damaged HDF5 file ({_first_line(exc).split(' (')[-1].rstrip(')')})"
        raise DataError(f"{path}: {reason}; pass {expected}") from exc


class SplitData:
    """One split of a store: labels in memory, images read on demand."""

    def __init__(self, store: ViewSetStore, name: str) -> None:
        self._store = store
        self.name = name
        group = store._h5()[name]
        self.category = np.asarray(group["category"][:], dtype=np.int64)
        self.object_names = _strings(group["object_name"])
        # where each object came from: informative only, so a file without it still reads
        self.source_paths = _strings(group["source_path"]) if "source_path" in group else [""] * len(self.category)

    def __len__(self) -> int:
        return len(self.category)

    @property
    def num_views(self) -> int:
        return self._store.num_views

    def _images(self) -> h5py.Dataset:
        return self._store._h5()[self.name]["images"]

    def views_uint8(self, index: int, views: Sequence[int] | None = None) -> np.ndarray:
        """The views of object `index` as uint8 (v, S, S, 3); `views` picks and orders them (default all)."""
        if not 0 <= index < len(self):
            raise IndexError(f"object {index} out of range for split {self.name!r} with {len(self)} objects")
        block = self._read(self._images(), index)  # one chunk, one read
        return block if views is None else block[np.asarray(views, dtype=np.int64)]

    def _read(self, images: h5py.Dataset, index: int) -> np.ndarray:
        try:
            return images[index]
        except OSError as exc:  # a damaged chunk (bit rot, a partly overwritten file)
            raise DataError(
                f"{self._store.path}: cannot read object {index} of the {self.name} split ({_first_line(exc)}); "
                "the file is damaged: re-create it with `piro prepare`"
            ) from exc

    def views(self, index: int, views: Sequence[int] | None = None, device: str | torch.device | None = None) -> torch.Tensor:
        """Normalised float views of one object, (v, 3, S, S)."""
        return normalize_views(self.views_uint8(index, views), device)

    def batch(
        self,
        indices: Sequence[int],
        views: Sequence[Sequence[int]] | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Normalised float views of several objects, (B, v, 3, S, S); `views[i]` picks views of object i."""
        picked = [self.views_uint8(int(i), None if views is None else views[n]) for n, i in enumerate(indices)]
        return normalize_views(np.stack(picked), device)

    def stream(
        self, batch_objects: int = 4, device: str | torch.device | None = None
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """All objects in file order: yields (object indices, (b, V, 3, S, S) floats).

        Reads one object (one chunk) at a time straight into the batch: whole-chunk
        reads skip HDF5's chunk cache, and each object is normalised while in cache.
        """
        import torch

        images = self._images()
        size = self._store.image_size
        for start in range(0, len(self), batch_objects):
            stop = min(start + batch_objects, len(self))
            target = torch.device(device) if device is not None else torch.device("cpu")
            out = torch.empty((stop - start, self.num_views, 3, size, size), dtype=torch.float32, device=target)
            for row, index in enumerate(range(start, stop)):
                normalize_into(out[row], torch.from_numpy(self._read(images, index)).to(target))
            yield np.arange(start, stop), out


@dataclass
class SplitInfo:
    name: str
    num_objects: int
    num_categories: int
    objects_per_category: dict[str, int] = field(default_factory=dict)


@dataclass
class StoreInfo:
    """A summary of a store, for `piro prepare --info`."""

    path: Path
    source_dataset: str
    piro_version: str
    created_at: str
    image_size: int
    num_views: int
    categories: list[str]
    creation_options: dict
    fingerprint: str
    file_bytes: int
    splits: list[SplitInfo]


class ViewSetStore:
    """Read access to a store. Opens lazily, and again in each worker process (h5py handles do not survive fork)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file; create it with `piro prepare DATASET RAW_DIR --out {self.path}`")
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a directory; pass the .h5 file written by `piro prepare` (e.g. data/<source>.h5)")
        self._file: h5py.File | None = None
        self._pid = -1
        root = self._h5()
        if root.attrs.get("format") != FORMAT_NAME:
            raise DataError(
                f"{self.path}: not a piro view-set file (no '{FORMAT_NAME}' format tag); create one with `piro prepare`"
            )
        version = int(root.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise DataError(
                f"{self.path}: format version {version} is newer than this piro understands ({FORMAT_VERSION}); upgrade piro"
            )
        self._check_root(root)
        self.categories = _strings(root["categories"])
        self.num_views = int(root.attrs["num_views"])
        self.image_size = int(root.attrs["image_size"])
        self.source_dataset = str(root.attrs["source_dataset"])
        self.fingerprint = str(root.attrs.get("fingerprint", ""))
        self.splits = [s for s in SPLITS if s in root]
        for split in self.splits:
            self._check_split(root, split)
        self._split_cache: dict[str, SplitData] = {}

    # The structure is checked on opening, from attributes, shapes and the label arrays only (no image is read):
    # a file edited or written by other tools must be refused, not evaluated into silently wrong numbers.

    def _malformed(self, where: str, problem: str) -> DataError:
        return DataError(f"{self.path}: {where}: {problem}; not a valid piro view-set file, re-create it with `piro prepare`")

    def _check_root(self, root: h5py.File) -> None:
        for key in ("num_views", "image_size", "source_dataset"):
            if key not in root.attrs:
                raise self._malformed(f"attribute '{key}'", "missing")
        for key in ("num_views", "image_size"):
            value = root.attrs[key]
            if not (np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.integer) and int(value) >= 1):
                raise self._malformed(f"attribute '{key}'", f"{value!r} is not a positive integer")
        categories = root.get("categories")
        if not isinstance(categories, h5py.Dataset):
            raise self._malformed("'categories'", "missing (the list of category names)")
        if categories.ndim != 1 or categories.dtype.kind not in "OSU" or len(categories) == 0:
            raise self._malformed(
                "'categories'", f"must be a non-empty 1-D list of names, not {categories.dtype} {categories.shape}"
            )

    def _check_split(self, root: h5py.File, split: str) -> None:
        group = root[split]
        if not isinstance(group, h5py.Group):
            raise self._malformed(f"split '{split}'", "is not a group of images, category and object_name")
        fields = ("images", "category", "object_name", *(("source_path",) if "source_path" in group else ()))
        for name in fields:
            if not isinstance(group.get(name), h5py.Dataset):
                raise self._malformed(f"split '{split}'", f"'{name}' is missing")
        images = group["images"]
        where = f"split '{split}' images"
        if images.ndim != 5:
            raise self._malformed(
                where, f"shape {images.shape} has {images.ndim} dimensions, expected 5 (objects, views, S, S, 3)"
            )
        if images.shape[0] == 0:  # piro writes a split only with its first object
            raise self._malformed(where, "hold no objects")
        if images.dtype != np.uint8:
            raise self._malformed(where, f"dtype {images.dtype}, expected uint8")
        if images.shape[4] != 3:
            raise self._malformed(where, f"shape {images.shape} has {images.shape[4]} colour channels, expected 3 (RGB)")
        if images.shape[1] != self.num_views:
            raise self._malformed(
                where, f"hold {images.shape[1]} views per object but the num_views attribute says {self.num_views}"
            )
        if images.shape[2:4] != (self.image_size, self.image_size):
            raise self._malformed(
                where, f"are {images.shape[2]}x{images.shape[3]} but the image_size attribute says {self.image_size}"
            )
        for name in fields[1:]:
            if group[name].ndim != 1 or len(group[name]) != images.shape[0]:
                raise self._malformed(
                    f"split '{split}' {name}", f"shape {group[name].shape} does not match the {images.shape[0]} rows of images"
                )
        problem = category_label_problem(group["category"], len(self.categories))
        if problem is not None:
            raise self._malformed(f"split '{split}' category", problem)

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = open_hdf5(self.path, "a file written by `piro prepare`")
            self._pid = os.getpid()
        return self._file

    @functools.cached_property
    def objects_fingerprint(self) -> str:
        """A short hash of which objects the file holds (source, categories, views per object, object names and
        labels per split), not of how they are stored: files prepared from the same dataset at other image sizes
        share it, so runs trained on them saw the same objects (`piro compare` may put them side by side)."""
        digest = hashlib.sha256()
        digest.update(f"{self.source_dataset}\n{self.num_views}\n".encode())
        digest.update("\n".join(self.categories).encode())
        for name in self.splits:
            split = self.split(name)
            digest.update(f"\n{name}\n".encode() + "\n".join(split.object_names).encode())
            digest.update(np.asarray(split.category, dtype=np.int32).tobytes())
        return digest.hexdigest()[:16]

    def split(self, name: str) -> SplitData:
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise DataError(f"{self.path}: has no '{name}' split (it has: {have})")
        if name not in self._split_cache:
            self._split_cache[name] = SplitData(self, name)
        return self._split_cache[name]

    def info(self) -> StoreInfo:
        root = self._h5()
        splits = []
        for name in self.splits:
            data = self.split(name)
            counts = np.bincount(data.category, minlength=len(self.categories))
            splits.append(
                SplitInfo(
                    name=name,
                    num_objects=len(data),
                    num_categories=int((counts > 0).sum()),
                    objects_per_category={c: int(n) for c, n in zip(self.categories, counts, strict=True) if n > 0},
                )
            )
        return StoreInfo(
            path=self.path,
            source_dataset=self.source_dataset,
            piro_version=str(root.attrs.get("piro_version", "")),
            created_at=str(root.attrs.get("created_at", "")),
            image_size=self.image_size,
            num_views=self.num_views,
            categories=list(self.categories),
            creation_options=self._creation_options(root),
            fingerprint=self.fingerprint,
            file_bytes=self.path.stat().st_size,
            splits=splits,
        )

    def _creation_options(self, root: h5py.File) -> dict:
        try:
            options = json.loads(root.attrs.get("creation_options", "{}"))
        except (TypeError, ValueError):
            options = None
        if not isinstance(options, dict):
            raise self._malformed("attribute 'creation_options'", "not a JSON object of the `piro prepare` options")
        return options

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ViewSetStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Picklable for DataLoader workers: the h5py handle is reopened in the child.
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = -1
        state["_split_cache"] = {}
        return state


def resolve_data(data: str | Path | None) -> Path:
    """The given file, or the most recently written ./data/*.h5."""
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise DataError(f"{path}: no such file; create it with `piro prepare DATASET RAW_DIR --out {path}`")
        return path
    candidates = sorted(Path("data").glob("*.h5"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise DataError(
            "no dataset given and none in ./data/; run `piro prepare synthetic` (or another source) first, or pass --data FILE"
        )
    return candidates[-1]
