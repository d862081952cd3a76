"""Bounds of `piro train`'s integer options, in one place: the command line gives them to typer (`limits`), and
TrainConfig checks every value against them however it arrives (a `--config` file, a run's config.json, the
library), so a file cannot pass what the command line refuses."""

from __future__ import annotations

from piro_cli.errors import PiroError

SEED_MAX = 2**32 - 1
"""The largest seed (numpy's seed range); seeds are options of several commands, all from 0 to SEED_MAX."""

INTEGER_BOUNDS: dict[str, tuple[int, int | None]] = {
    "cat_dim": (1, None),
    "obj_dim": (1, None),
    "epochs": (1, None),
    "lr_step": (0, None),
    "batch_pairs": (1, None),
    "batch_objects": (1, None),
    "pairs_per_object": (1, None),
    "views": (1, None),
    "seed": (0, SEED_MAX),
    "val_seed": (0, SEED_MAX),
    "feature_passes": (1, None),
    "folds": (2, None),
    "fold": (1, None),
    "gml_proxies": (1, None),
    "language_topk": (1, 1000),
}
"""TrainConfig field -> (smallest, largest or None) of its integer option."""


TEST_SCALE_RANGE = (0.5, 2.0)  # of the stored view's side: beyond it a view is mostly blur or lost detail
MAX_TEST_SCALES = 4


def check_test_scales(scales) -> tuple[float, ...]:
    """`--tta-scales` as a tuple of distinct factors within TEST_SCALE_RANGE (1 to MAX_TEST_SCALES of them); a text
    "1,1.15" is split at commas. ValueError says what is wrong."""
    if isinstance(scales, str):
        scales = [part for part in scales.split(",") if part.strip()]
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"{scales!r} is not a list of numbers (e.g. 1,1.15)") from None
    low, high = TEST_SCALE_RANGE
    if not 1 <= len(values) <= MAX_TEST_SCALES:
        raise ValueError(f"give 1 to {MAX_TEST_SCALES} factors, got {len(values)}")
    if any(not low <= v <= high for v in values):  # also refuses nan
        raise ValueError(f"each factor must lie in [{low:g}, {high:g}], got {', '.join(f'{v:g}' for v in values)}")
    if len(set(values)) != len(values):
        raise ValueError(f"a factor is repeated: {', '.join(f'{v:g}' for v in values)}")
    return values


def limits(field: str) -> dict:
    """typer.Option's min= and max= of an integer option."""
    low, high = INTEGER_BOUNDS[field]
    return {"min": low, "max": high}


def check_integer_options(values: dict) -> None:
    """A PiroError naming the option for the first value (not None) outside its bounds or not an integer."""
    for field, (low, high) in INTEGER_BOUNDS.items():
        value = values.get(field)
        if value is None:
            continue
        option = "--" + field.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, int):
            raise PiroError(f"{option} {value!r}: must be a whole number")
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise PiroError(f"{option} {value}: must be {bounds}")
