"""A user's own objects: any `<split>/<category>/<object>/*.{jpg,jpeg,png}` tree.

Views are taken in natural file-name order (view2 before view10).
"""

from __future__ import annotations

from pathlib import Path

from piro_cli.data.sources.base import Source, SourceScan
from piro_cli.data.sources.image_tree import scan_image_tree

EXPECTED_LAYOUT = (
    "  RAW/{train,test,val}/<category>/<object>/*.{jpg,jpeg,png}   (views in file-name order; any split may be missing)"
)


def scan(raw_dir: Path | None) -> SourceScan:
    return scan_image_tree(raw_dir, "folder", EXPECTED_LAYOUT)


SOURCE = Source(
    name="folder",
    summary="your own objects: RAW/{train,test,val}/<category>/<object>/*.jpg|png",
    expected_layout=EXPECTED_LAYOUT,
    scan=scan,
)
