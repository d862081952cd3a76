"""Shared scanner for image trees laid out as `<split>/<category>/<object>/<view images>`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from piro_cli.data.sources.base import ObjectRecord, SourceScan, image_loader, list_images, require_dir, subdirs
from piro_cli.data.store import SPLITS
from piro_cli.errors import DataError


def scan_image_tree(
    raw_dir: Path | None,
    source: str,
    expected_layout: str,
    view_order: Callable[[Path], object] | None = None,
) -> SourceScan:
    """Every `<split>/<category>/<object>/` folder with images becomes one object.

    `view_order` sorts an object's images into capture order (default: natural file-name order).
    """
    root = require_dir(raw_dir, source, expected_layout)
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    if not split_dirs:
        images = list_images(root)
        found = ", ".join(p.name for p in subdirs(root)[:5]) or (f"{len(images)} images, no folders" if images else "nothing")
        hint = " Put each object's images in <split>/<category>/<object>/." if images else ""
        if any(subdirs(child) for child in subdirs(root)):
            hint = f" If {root} is itself one split, pass its parent folder instead."
        raise DataError(
            f"{root}: no train/ or test/ (or val/) folder inside (found: {found}).{hint} "
            f"`piro prepare {source}` expects:\n{expected_layout}"
        )

    records: list[ObjectRecord] = []
    categories: set[str] = set()
    for split_dir in split_dirs:
        for category_dir in subdirs(split_dir):
            for object_dir in subdirs(category_dir):
                views = list_images(object_dir)
                if not views:
                    continue
                if view_order is not None:
                    views.sort(key=view_order)
                categories.add(category_dir.name)
                records.append(
                    ObjectRecord(
                        split=split_dir.name,
                        category=category_dir.name,
                        name=object_dir.name,
                        source_path=str(object_dir),
                        load=image_loader(views),
                        num_views=len(views),
                    )
                )
    if not records:
        raise DataError(
            f"{root}: no object folders with .jpg/.jpeg/.png images found. `piro prepare {source}` expects:\n{expected_layout}"
        )
    return SourceScan(
        records=records, categories=sorted(categories), description=f"image tree ({', '.join(p.name for p in split_dirs)})"
    )
