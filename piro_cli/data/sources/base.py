"""What every dataset source produces: a list of objects, each able to load its views.

A source only *scans* its raw layout (cheap, no image decoding); the views are
loaded later, one object at a time, by `ObjectRecord.load`, so that preparing a
dataset streams and `--skip-bad` can skip single objects.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from piro_cli.errors import BadItemError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

ViewLoader = Callable[[int], np.ndarray]
"""Given the square image size, return the views as uint8 (V, size, size, 3) in capture order."""


@dataclass(frozen=True)
class ObjectRecord:
    """One object of a dataset split, before its views are loaded."""

    split: str
    category: str
    name: str
    source_path: str  # the object's folder, mesh file or id, as the user holds it
    load: ViewLoader
    num_views: int | None = None  # known from the listing (image sources); None for meshes


@dataclass(frozen=True)
class SourceScan:
    """The result of scanning a raw directory."""

    records: list[ObjectRecord]
    categories: list[str]  # every category name, in index order
    description: str = ""  # e.g. which of the three ModelNet-40 layouts was found


def natural_key(text: str) -> list[object]:
    """Sort key that orders 'View2' before 'View10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, in natural order."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: natural_key(p.name),
    )


def read_image(path: Path | BinaryIO, size: int, name: str | None = None) -> np.ndarray:
    """Decode one image (a file, or an open binary stream called `name`) as RGB uint8 (size, size, 3), resized
    with bilinear filtering."""
    try:
        # photos up to PIL's hard limit (2 x MAX_IMAGE_PIXELS, about 179 megapixels) are read without its warning,
        # which would reach the terminal raw; larger ones raise DecompressionBombError, reported below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise BadItemError(name or str(path), f"cannot read image ({exc})", fix="fix or remove the file") from exc


def image_loader(paths: Sequence[Path]) -> ViewLoader:
    """A loader that reads the given view images in order."""
    frozen = tuple(paths)

    def load(size: int) -> np.ndarray:
        return np.stack([read_image(path, size) for path in frozen])

    return load


def require_dir(raw_dir: Path | None, source: str, expected_layout: str) -> Path:
    """Check that the raw directory exists and is a directory, else explain the layout."""
    if raw_dir is None:
        raise DataError(f"`piro prepare {source}` needs RAW_DIR, a folder laid out as:\n{expected_layout}")
    if not raw_dir.exists():
        raise DataError(f"{raw_dir}: no such directory. `piro prepare {source}` expects:\n{expected_layout}")
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: not a directory. `piro prepare {source}` expects:\n{expected_layout}")
    return raw_dir


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders in natural order."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name))


@dataclass(frozen=True)
class Source:
    """A dataset source: how `piro prepare NAME` finds objects in a raw directory."""

    name: str
    summary: str  # one line for `piro prepare --help`
    expected_layout: str  # shown when the raw directory does not match
    scan: Callable[..., SourceScan]  # scan(raw_dir, **source_options) -> SourceScan
    needs_raw: bool = True
