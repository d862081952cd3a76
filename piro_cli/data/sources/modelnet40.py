"""ModelNet-40 (Wu et al. 2015), in any of the three ways people hold it.

(a) meshes       RAW/<category>/{train,test}/<category>_NNNN.off   rendered by piro (12 views, 30 deg elevation)
(b) MVCNN views  RAW/<category>/{train,test}/<category>_NNNN_VVV.{png,jpg}  (or .obj.shaded_vVVV.png,
                 or one folder per model)
(c) PiRO release RAW/{train,test}/<object id>/<view>.jpg with RAW/{train,test}_o2c.npy
"""

from __future__ import annotations

from pathlib import Path

from piro_cli.data.sources.base import Source, SourceScan, require_dir, subdirs
from piro_cli.data.sources.multiview import keep_first_per_category, objects_in_dir, scan_release_if_present
from piro_cli.data.store import SPLITS
from piro_cli.errors import DataError

# The 40 categories in the dataset's (alphabetical) index order; the release layout's integer labels index this.
CATEGORIES = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
]  # fmt: skip

EXPECTED_LAYOUT = """\
  (a) RAW/<category>/{train,test}/<category>_NNNN.off             meshes, rendered by piro
  (b) RAW/<category>/{train,test}/<category>_NNNN_VVV.{png,jpg}   MVCNN's 12 pre-rendered views per model
      (or <category>_NNNN.obj.shaded_vVVV.png, or one folder of views per model)
  (c) RAW/{train,test}/<object id>/<view>.jpg + RAW/{train,test}_o2c.npy   the PiRO authors' release"""


def scan(raw_dir: Path | None, per_category: int | None = None, up_axis: str = "z") -> SourceScan:
    root = require_dir(raw_dir, "modelnet40", EXPECTED_LAYOUT)
    release = scan_release_if_present(root, CATEGORIES, "modelnet40", per_category)
    if release is not None:
        return release

    records = []
    for category_dir in subdirs(root):
        for split in SPLITS:
            records.extend(objects_in_dir(category_dir / split, split, category_dir.name, up_axis))
    if not records:
        raise DataError(f"{root}: no ModelNet-40 models found. `piro prepare modelnet40` expects one of:\n{EXPECTED_LAYOUT}")
    records = keep_first_per_category(records, per_category)
    meshes = sum(r.num_views is None for r in records)
    kind = "meshes, rendered by piro" if meshes == len(records) else "pre-rendered views" if meshes == 0 else "meshes and views"
    categories = sorted({r.category for r in records}, key=lambda c: (CATEGORIES.index(c) if c in CATEGORIES else 99, c))
    return SourceScan(records, categories, description=kind)


SOURCE = Source(
    name="modelnet40",
    summary="ModelNet-40: .off meshes (rendered), MVCNN view images, or the PiRO release",
    expected_layout=EXPECTED_LAYOUT,
    scan=scan,
)
