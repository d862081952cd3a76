"""ObjectPI (Ho et al., CVPR 2019): real photos, 8 views per object.

Layout: `{train,test}/<Category>/<Object>/<Object>_View<k>.jpg`, k = 1..8; the
suffix is sometimes spelled `_view<k>`, and names contain spaces and parentheses.
"""

from __future__ import annotations

import re
from pathlib import Path

from piro_cli.data.sources.base import Source, SourceScan, natural_key
from piro_cli.data.sources.image_tree import scan_image_tree

EXPECTED_LAYOUT = "  RAW/{train,test}/<Category>/<Object>/<Object>_View<k>.jpg   (k = 1..8; either split may be missing)"

_VIEW_NUMBER = re.compile(r"_view(\d+)$", re.IGNORECASE)


def _view_order(path: Path) -> tuple[int, list[object]]:
    """Order by the k of `_View<k>` whatever its case; files without it go last, in natural order."""
    match = _VIEW_NUMBER.search(path.stem)
    return (int(match.group(1)) if match else 1 << 30, natural_key(path.name))


def scan(raw_dir: Path | None) -> SourceScan:
    return scan_image_tree(raw_dir, "objectpi", EXPECTED_LAYOUT, view_order=_view_order)


SOURCE = Source(
    name="objectpi",
    summary="ObjectPI real photos: RAW/{train,test}/<Category>/<Object>/<Object>_View<k>.jpg",
    expected_layout=EXPECTED_LAYOUT,
    scan=scan,
)
