"""The built-in synthetic dataset: procedurally generated objects, rendered with the 12-view protocol.

Needs no download, so the demo and the tests run anywhere. Instances of a category share a shape family and
differ in small geometric ways (proportions, part shapes, part presence).

Two difficulties:
- `hard` (the default), hard in the way photographs are: every instance of a family wears the family's colour
  scheme (colour cannot tell instances apart), and every view has its own camera jitter (elevation, azimuth,
  distance), key-light direction and light intensities, and a textured, cluttered background;
- `easy`: the earlier set, per-instance colours from one palette, the fixed protocol, white background.
Both are deterministic for a seed.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np

from piro_cli.data.sources.base import ObjectRecord, Source, SourceScan
from piro_cli.errors import DataError

DEFAULT_CATEGORIES = 10
DEFAULT_OBJECTS_PER_CATEGORY = 12
DEFAULT_TEST_FRACTION = 0.25


def object_seed(seed: int, category_index: int, instance: int) -> int:
    """A stable per-object seed, independent of how many objects or categories are generated."""
    return int(np.random.SeedSequence([seed, category_index, instance]).generate_state(1)[0])


DIFFICULTIES = ("hard", "easy")


def render_object(category: str, seed: int, size: int, difficulty: str = "hard") -> np.ndarray:
    from piro_cli.data.render import ViewVariation, normalize_to_unit_sphere, render_views
    from piro_cli.data.shapes import make_object

    hard = difficulty == "hard"
    mesh = normalize_to_unit_sphere(make_object(category, seed, family_colours=hard))
    return render_views(mesh, size=size, use_colors=True, variation=ViewVariation(seed=seed) if hard else None)


def scan(
    raw_dir: Path | None = None,
    seed: int = 0,
    categories: int = DEFAULT_CATEGORIES,
    objects_per_category: int = DEFAULT_OBJECTS_PER_CATEGORY,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    difficulty: str = "hard",
) -> SourceScan:
    from piro_cli.data.shapes import SHAPE_FAMILIES

    if difficulty not in DIFFICULTIES:
        raise DataError(f"--difficulty {difficulty!r}: choose one of {', '.join(DIFFICULTIES)}")
    families = list(SHAPE_FAMILIES)
    if not 1 <= categories <= len(families):
        raise DataError(
            f"--categories {categories}: the synthetic set has 1 to {len(families)} categories ({', '.join(families)})"
        )
    if objects_per_category < 2:
        raise DataError(f"--objects-per-category {objects_per_category}: need at least 2 (training pairs objects of a category)")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction {test_fraction}: must be in [0, 1)")
    num_test = min(objects_per_category - 1, math.ceil(objects_per_category * test_fraction)) if test_fraction > 0 else 0

    records = []
    for category_index, category in enumerate(families[:categories]):
        for instance in range(objects_per_category):
            split = "test" if instance >= objects_per_category - num_test else "train"
            object_id = object_seed(seed, category_index, instance)
            name = f"{category}_{instance:03d}"
            records.append(
                ObjectRecord(
                    split, category, name, f"synthetic:{category}:{object_id}",
                    partial(render_object, category, object_id, difficulty=difficulty),
                )  # fmt: skip
            )
    return SourceScan(records, families[:categories], description=f"procedural shapes, seed {seed}, {difficulty}")


SOURCE = Source(
    name="synthetic",
    summary="built-in procedural 3-D objects rendered by piro (no RAW_DIR; for the demo and tests)",
    expected_layout="",
    scan=scan,
    needs_raw=False,
)
