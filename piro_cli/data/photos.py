"""Users' photos read into a view set: uint8 (V, S, S, 3), resized as `piro prepare` resizes (read_image), with
one clear line for a photo that cannot be read. numpy and PIL only: `piro identify --onnx` runs without torch."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from piro_cli.data.sources.base import IMAGE_SUFFIXES, read_image
from piro_cli.errors import BadItemError, DataError


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
        raise DataError("no photos given: pass one or more image files")
    return np.stack(views), read, skipped


def _read_photo(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        if path.is_dir():
            raise BadItemError(str(path), "is a folder, not an image file", fix="pass the image files inside it")
        if path.exists():  # a FIFO, a device, a socket: reading one could block or never end
            raise BadItemError(str(path), "is not a regular file", fix="pass an image file")
        raise BadItemError(str(path), "no such image file", fix="check the path")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise BadItemError(str(path), "not an image file name", fix=f"pass image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return read_image(path, size)


def decode_photos(photos: Sequence[tuple[str, bytes]], size: int) -> np.ndarray:
    """Photos received as (name, encoded bytes), e.g. uploaded to `piro serve`, as uint8 (V, size, size, 3),
    decoded and resized as files are; a photo that cannot be decoded is a BadItemError naming it."""
    if not photos:
        raise DataError("no photos given: send one or more image files")
    return np.stack([read_image(io.BytesIO(data), size, name) for name, data in photos])
