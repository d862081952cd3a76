"""FG3D (Liu et al. 2021): fine-grained airplane, car and chair subtypes, 66 categories.

Files read, in whichever of these layouts is found:

(a) meshes       RAW/<Airplane|Car|Chair>/{train,test}/<subtype>/<shape>.{obj,off}  rendered by piro
(b) views        the same tree with one folder of 12 view images per shape (or flat <shape>_VVV.png files)
(c) PiRO release RAW/{train,test}/<object id>/<view>.jpg with RAW/{train,test}_o2c.npy
                 (and optionally RAW/categories.txt naming integer labels, one per line)

Categories are named `<top>_<subtype>` (e.g. `airplane_airliner`), so the three
top-level families never collide. FG3D's meshes are y-up (ShapeNet convention).
"""

from __future__ import annotations

from pathlib import Path

from piro_cli.data.sources.base import Source, SourceScan, natural_key, require_dir, subdirs
from piro_cli.data.sources.multiview import keep_first_per_category, objects_in_dir, scan_release_if_present
from piro_cli.data.store import SPLITS
from piro_cli.errors import DataError

EXPECTED_LAYOUT = """\
  (a) RAW/<Airplane|Car|Chair>/{train,test}/<subtype>/<shape>.{obj,off}     meshes, rendered by piro
  (b) RAW/<Airplane|Car|Chair>/{train,test}/<subtype>/<shape>/<view>.png    12 rendered views per shape
  (c) RAW/{train,test}/<object id>/<view>.jpg + RAW/{train,test}_o2c.npy      the PiRO authors' release"""


def scan(raw_dir: Path | None, per_category: int | None = None, up_axis: str = "y") -> SourceScan:
    root = require_dir(raw_dir, "fg3d", EXPECTED_LAYOUT)
    release = scan_release_if_present(root, None, "fg3d", per_category)
    if release is not None:
        return release

    records = []
    for family_dir in subdirs(root):
        if family_dir.name in SPLITS:
            continue
        for split in SPLITS:
            split_dir = family_dir / split
            if not split_dir.is_dir():
                continue
            for subtype_dir in subdirs(split_dir):
                category = f"{family_dir.name.lower()}_{subtype_dir.name}"
                records.extend(objects_in_dir(subtype_dir, split, category, up_axis))
    if not records:
        raise DataError(f"{root}: no FG3D shapes found. `piro prepare fg3d` expects one of:\n{EXPECTED_LAYOUT}")
    records = keep_first_per_category(records, per_category)
    categories = sorted({r.category for r in records}, key=natural_key)
    kind = "meshes, rendered by piro" if all(r.num_views is None for r in records) else "rendered views"
    return SourceScan(records, categories, description=kind)


SOURCE = Source(
    name="fg3d",
    summary="FG3D fine-grained airplane/car/chair subtypes: meshes, rendered views, or the PiRO release",
    expected_layout=EXPECTED_LAYOUT,
    scan=scan,
)
