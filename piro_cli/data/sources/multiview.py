"""Building blocks shared by the 3-D model sources (ModelNet-40, FG3D).

People hold these datasets in three ways: the meshes (rendered by piro),
pre-rendered view images per model (MVCNN style), or the PiRO authors'
release of numbered object folders with an object-to-category map.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

from piro_cli.data.sources.base import (
    IMAGE_SUFFIXES,
    ObjectRecord,
    SourceScan,
    image_loader,
    list_images,
    natural_key,
    subdirs,
)
from piro_cli.data.store import SPLITS
from piro_cli.errors import DataError

MESH_SUFFIXES = (".off", ".obj", ".stl", ".ply")

# '<model>_001.png', '<model>.obj.shaded_v001.png', '<model>-v3.jpg': the model key, then a view number.
_GROUPED_VIEW = re.compile(r"^(?P<model>.+?)(?:\.(?:obj|off))?(?:[._-]?shaded)?[._-]v?(?P<view>\d+)$", re.IGNORECASE)


def render_mesh(path: Path, up_axis: str, size: int) -> np.ndarray:
    """Render one mesh file with the 12-view protocol (imported lazily: only mesh layouts need torch rendering)."""
    from piro_cli.data.render import ViewProtocol, render_mesh_file

    return render_mesh_file(path, size=size, protocol=ViewProtocol(up_axis=up_axis))


def objects_in_dir(folder: Path, split: str, category: str, up_axis: str) -> list[ObjectRecord]:
    """The objects of one (split, category) folder, in natural order.

    The folder may hold mesh files (one object each), one sub-folder of view
    images per object, or flat view images named `<model>_<view>.<ext>`.
    """
    if not folder.is_dir():
        return []
    records: list[ObjectRecord] = []
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: natural_key(p.name))
    for mesh in (p for p in files if p.suffix.lower() in MESH_SUFFIXES):
        records.append(ObjectRecord(split, category, mesh.stem, str(mesh), partial(render_mesh, mesh, up_axis), num_views=None))
    for object_dir in subdirs(folder):
        views = list_images(object_dir)
        if views:
            records.append(ObjectRecord(split, category, object_dir.name, str(object_dir), image_loader(views), len(views)))
    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for image in (p for p in files if p.suffix.lower() in IMAGE_SUFFIXES):
        match = _GROUPED_VIEW.match(image.stem)
        if match is None:
            raise DataError(
                f"{image}: cannot tell which model and view this image is; flat view images must be named "
                "<model>_<view number>.<ext> (e.g. airplane_0001_001.png), or put each model's views in its own folder"
            )
        groups[match.group("model")].append((int(match.group("view")), image))
    for model in sorted(groups, key=natural_key):
        views = [path for _, path in sorted(groups[model])]
        records.append(ObjectRecord(split, category, model, str(folder / model), image_loader(views), num_views=len(views)))
    return records


def keep_first_per_category(records: list[ObjectRecord], per_category: int | None) -> list[ObjectRecord]:
    """`--per-category N`: the first N objects of each category in each split (in listing order)."""
    if per_category is None:
        return records
    if per_category < 1:
        raise DataError(f"--per-category {per_category}: must be at least 1")
    seen: dict[tuple[str, str], int] = defaultdict(int)
    kept = []
    for record in records:
        key = (record.split, record.category)
        if seen[key] < per_category:
            seen[key] += 1
            kept.append(record)
    return kept


def load_object_to_category(path: Path) -> dict[str, object]:
    """Read a `{split}_o2c.npy` map: object id -> category (index or name), from a plain .npy array.

    Never unpickled: a pickled file (a dict, an object array) could run code while loading, so it is refused
    with the conversion to a plain array, which the user can run on a file they trust.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) and not _looks_pickled(path):  # numpy takes any non-.npy file for a pickle
            raise DataError(f"{path}: not a .npy file; save the object-to-category map with np.save") from None
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: holds pickled Python objects, which piro never loads (unpickling can run code); if you trust "
                "the file, re-save it as a plain array: np.save(path, np.asarray(labels, dtype=np.int64)) with labels[i] "
                "the category index of object i (dtype=str for category names), or an (N, 2) array of (object id, category) rows"
            ) from None
        raise DataError(f"{path}: not a readable .npy array ({exc}); re-save it with np.save") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the object-to-category map ({exc})") from exc
    if not isinstance(data, np.ndarray):  # an .npz archive
        data.close()
        raise DataError(f"{path}: an .npz archive, not a .npy array; save the map with np.save, not np.savez")
    if data.dtype.kind not in "iuU":
        raise DataError(
            f"{path}: has dtype {data.dtype}; the map must hold integer category indices or category names "
            "(re-save it with np.asarray(labels, dtype=np.int64) or dtype=str)"
        )
    if data.ndim == 1:
        return {str(i): data[i].item() for i in range(len(data))}
    if data.ndim == 2 and data.shape[1] == 2:  # rows of (object id, category)
        return {str(row[0]): row[1].item() for row in data}
    raise DataError(f"{path}: expected a 1-D array of categories or (N, 2) rows of (object id, category), got shape {data.shape}")


def _looks_pickled(path: Path) -> bool:
    """An .npy header (numpy refused its object array) or a pickle's protocol opcode (0x80) at the start."""
    with path.open("rb") as handle:
        head = handle.read(6)
    return head.startswith((b"\x93NUMPY", b"\x80"))


def scan_release_if_present(
    root: Path, category_names: list[str] | None, source: str, per_category: int | None
) -> SourceScan | None:
    """The release layout when `root` has `<split>_o2c.npy` maps (first N per category kept), else None."""
    splits = [s for s in SPLITS if (root / f"{s}_o2c.npy").exists()]
    if not splits:
        return None
    found = scan_release(root, splits, category_names, source)
    return SourceScan(keep_first_per_category(found.records, per_category), found.categories, found.description)


def scan_release(root: Path, splits: list[str], category_names: list[str] | None, source: str) -> SourceScan:
    """The PiRO authors' release: `<split>/<object id>/<view>.jpg` plus `<split>_o2c.npy`.

    Categories given as integers are named from `categories.txt` beside the
    maps if present, else `category_names` (index order); categories given as
    strings are used as they are.
    """
    names_file = root / "categories.txt"
    if names_file.exists():  # one category name per line, index order: overrides the built-in names
        try:
            text = names_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{names_file}: cannot read the category names ({exc}); it must be UTF-8 text, one name a line"
            ) from exc
        category_names = [line.strip() for line in text.splitlines() if line.strip()]
    records: list[ObjectRecord] = []
    used: set[str] = set()
    for split in splits:
        o2c_path = root / f"{split}_o2c.npy"
        split_dir = root / split
        if not o2c_path.exists():
            raise DataError(f"{o2c_path}: missing; the {source} release layout needs one <split>_o2c.npy per split folder")
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: missing; {o2c_path.name} is there but not the {split}/ folder of object views")
        o2c = load_object_to_category(o2c_path)
        for object_dir in subdirs(split_dir):
            if object_dir.name not in o2c:
                raise DataError(f"{object_dir}: object id '{object_dir.name}' is not in {o2c_path.name}")
            label = o2c[object_dir.name]
            category = _category_name(label, category_names, o2c_path)
            views = list_images(object_dir)
            if not views:
                continue
            used.add(category)
            records.append(ObjectRecord(split, category, object_dir.name, str(object_dir), image_loader(views), len(views)))
    if category_names is not None:
        categories = [c for c in category_names if c in used] + sorted(used - set(category_names))
    else:
        categories = sorted(used, key=natural_key)
    return SourceScan(records, categories, description=f"PiRO release ({', '.join(splits)} with *_o2c.npy)")


def _category_name(label: object, names: list[str] | None, o2c_path: Path) -> str:
    if isinstance(label, str):
        return label
    index = int(label)  # type: ignore[arg-type]
    if names is None:
        return f"class_{index:02d}"
    if not 0 <= index < len(names):
        raise DataError(f"{o2c_path}: category index {index} is outside 0..{len(names) - 1}")
    return names[index]
