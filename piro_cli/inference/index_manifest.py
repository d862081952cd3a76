"""The schema of an index's manifest (`index.json`) and shards, checked whenever an index is opened.

An index is a folder a user can edit, copy from elsewhere or damage; every value piro reads from it goes through
these checks first, so a bad one is refused in one line naming the field, instead of answering wrongly (a negative
category indexes from the end, a string of categories is iterated letter by letter, a NaN threshold makes every
answer `unknown`) or failing later with a traceback. Shards carry the fingerprint of the weights that made them,
so a shard copied from another run of the same dimensions is refused too; zip's CRC-32 covers their bytes.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from piro_cli.errors import DataError
from piro_cli.options import check_test_scales

SHARD_NAME = re.compile(r"[0-9]{6,12}\.npz")  # what _next_shard writes; anything else could leave the folder
DISTANCES = ("views", "viewset", "combined")  # ScoringRule.distance
REJECTIONS = ("distance", "ratio", "spread", "neighbourhood", "scaled")  # ScoringRule.rejection


class ManifestError(DataError):
    pass


def _bad(where: Path, field: str, problem: str) -> ManifestError:
    return ManifestError(f"{where}: {field} {problem}; the index was edited or damaged: restore it or build it again")


def _integer(where: Path, field: str, value: Any, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        raise _bad(where, field, f"is {value!r}: it must be an integer {bounds}")
    return value


def _number(where: Path, field: str, value: Any, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise _bad(where, field, f"is {value!r}: it must be a finite number >= {low:g}")
    if high is not None and value > high:
        raise _bad(where, field, f"is {value!r}: it must be at most {high:g}")
    return float(value)


def _text(where: Path, field: str, value: Any, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise _bad(where, field, f"is {value!r}: it must be {'a' if empty else 'a non-empty'} string")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise _bad(where, field, f"is {value!r}: it holds control characters")
    return value


def _mapping(where: Path, field: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise _bad(where, field, f"is {type(value).__name__}: it must be an object ({{...}})")
    return value


def _listed(where: Path, field: str, value: Any) -> list:
    if not isinstance(value, list):
        raise _bad(where, field, f"is {type(value).__name__}: it must be a list ([...])")
    return value


def recorded_tta_scales(record: Mapping) -> list[float]:
    """The test-time scales an index's checkpoint record or an export's facts hold; [1.0] for those from before them."""
    return [float(s) for s in record.get("tta_scales") or [1.0]]


def check_manifest(manifest: Any, where: Path, newest_version: int) -> None:
    """Raise ManifestError (one line, naming the field) unless `manifest` is a well-formed index manifest."""
    manifest = _mapping(where, "the manifest", manifest)
    version = _integer(where, "format_version", manifest.get("format_version", 1), low=1)
    if version > newest_version:
        raise ManifestError(f"{where}: written by a newer piro ({manifest.get('piro_version')}); upgrade piro to read it")
    checkpoint = _mapping(where, "checkpoint", manifest.get("checkpoint"))
    _text(where, "checkpoint.fingerprint", checkpoint.get("fingerprint"))
    _text(where, "checkpoint.path", checkpoint.get("path"))
    for key in ("cat_dim", "obj_dim", "image_size"):
        _integer(where, f"checkpoint.{key}", checkpoint.get(key), low=1)
    if not isinstance(checkpoint.get("tta", False), bool):
        raise _bad(where, "checkpoint.tta", f"is {checkpoint.get('tta')!r}: it must be true or false")
    scales = checkpoint.get("tta_scales", [1.0])
    if not isinstance(scales, list) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scales):
        raise _bad(where, "checkpoint.tta_scales", f"is {scales!r}: it must be a list of numbers")
    try:
        check_test_scales(scales)
    except ValueError as exc:
        raise _bad(where, "checkpoint.tta_scales", str(exc)) from None
    _mapping(where, "checkpoint.model_config", checkpoint.get("model_config", {}))
    categories = _listed(where, "categories", manifest.get("categories"))
    for k, name in enumerate(categories):
        _text(where, f"categories[{k}]", name)
    if len(set(categories)) != len(categories):
        raise _bad(where, "categories", "lists a category twice")
    shards = _listed(where, "shards", manifest.get("shards"))
    for k, shard in enumerate(shards):
        if not isinstance(shard, str) or not SHARD_NAME.fullmatch(shard):
            raise _bad(where, f"shards[{k}]", f"is {shard!r}: shard names are NNNNNN.npz inside the index's shards/ folder")
    if len(set(shards)) != len(shards):
        raise _bad(where, "shards", "lists a shard twice")
    _check_objects(manifest, where, len(categories), set(shards))
    ids = [o["id"] for o in manifest["objects"]]
    if "next_id" in manifest:
        _integer(where, "next_id", manifest["next_id"], low=max(ids, default=-1) + 1)
    if "next_shard" in manifest:
        highest = max((int(s.split(".")[0]) for s in shards), default=-1)
        _integer(where, "next_shard", manifest["next_shard"], low=highest + 1)
    threshold = manifest.get("threshold")
    if threshold is not None:
        check_threshold(threshold, where)


def _check_objects(manifest: dict, where: Path, categories: int, shards: set[str]) -> None:
    objects = _listed(where, "objects", manifest.get("objects"))
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    fields = {"id", "name", "category", "views", "source", "shard"}
    for k, obj in enumerate(objects):
        at = f"objects[{k}]"
        obj = _mapping(where, at, obj)
        if set(obj) != fields:
            extra, missing = sorted(set(obj) - fields), sorted(fields - set(obj))
            raise _bad(where, at, f"has {'unknown entries ' + ', '.join(extra) if extra else 'no ' + ', '.join(missing)}")
        identity = _integer(where, f"{at}.id", obj["id"])
        name = _text(where, f"{at}.name", obj["name"])
        _integer(where, f"{at}.category", obj["category"], high=categories - 1)
        _integer(where, f"{at}.views", obj["views"], low=1)
        _text(where, f"{at}.source", obj["source"], empty=True)
        if not isinstance(obj["shard"], str) or obj["shard"] not in shards:
            raise _bad(where, f"{at}.shard", f"is {obj['shard']!r}, which the shards list does not hold")
        if identity in seen_ids:
            raise _bad(where, f"{at}.id", f"is {identity}, the id of another object")
        if name in seen_names:
            raise _bad(where, f"{at}.name", f"is {name!r}, the name of another object")
        seen_ids.add(identity)
        seen_names.add(name)


def check_threshold(threshold: Any, where: Path) -> None:
    """The calibration record (`piro index calibrate`): its rule and each photo count's threshold."""
    threshold = _mapping(where, "threshold", threshold)
    scoring = threshold.get("scoring")
    if scoring is not None:
        scoring = _mapping(where, "threshold.scoring", scoring)
        if scoring.get("distance", "views") not in DISTANCES:
            raise _bad(where, "threshold.scoring.distance", f"is {scoring.get('distance')!r}: choose one of {', '.join(DISTANCES)}")
        if scoring.get("rejection", "distance") not in REJECTIONS:
            raise _bad(
                where, "threshold.scoring.rejection", f"is {scoring.get('rejection')!r}: choose one of {', '.join(REJECTIONS)}"
            )
    by_photos = threshold.get("by_photos")
    if by_photos is None:  # indexes calibrated before per-photo-count thresholds: one distance
        _number(where, "threshold.distance", threshold.get("distance"))
        return
    by_photos = _mapping(where, "threshold.by_photos", by_photos)
    if not by_photos:
        raise _bad(where, "threshold.by_photos", "is empty")
    for count, entry in by_photos.items():
        at = f"threshold.by_photos[{count!r}]"
        if not (isinstance(count, str) and count.isdigit() and int(count) >= 1):
            raise _bad(where, at, "is keyed by something other than a number of photos (1, 2, ...)")
        entry = _mapping(where, at, entry)
        _number(where, f"{at}.score", entry.get("score"))
        for rate in ("far", "frr", "wrong_object"):
            if entry.get(rate) is not None:
                _number(where, f"{at}.{rate}", entry[rate], high=1.0)
        scores = _listed(where, f"{at}.impostor_scores", entry.get("impostor_scores", []))
        for value in scores:
            _number(where, f"{at}.impostor_scores", value)


def check_shard(arrays: dict[str, np.ndarray], path: Path, fingerprint: str, cat_dim: int, obj_dim: int) -> None:
    """A shard's arrays: integer object ids, float32 rows of the index's dimensions, the index's weights."""
    made_by = arrays.get("fingerprint")
    if made_by is not None and str(made_by) != fingerprint:
        raise DataError(
            f"{path}: made by other weights (fingerprint {str(made_by)}, the index's is {fingerprint}); "
            "restore the index's own shard or build the index again"
        )
    for rows_of, fields in (("view_object", ("sv_cat", "sv_obj")), ("set_object", ("mv_cat", "mv_obj"))):
        ids = arrays[rows_of]
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise DataError(f"{path}: {rows_of} is not a list of integer object ids; the shard is damaged, build the index again")
        for name, dim in zip(fields, (cat_dim, obj_dim), strict=True):
            rows = arrays[name]
            if rows.shape != (len(ids), dim) or rows.dtype != np.float32:
                raise DataError(
                    f"{path}: {name} is {rows.dtype} {tuple(rows.shape)}, not float32 ({len(ids)}, {dim}); "
                    "the shard is damaged or from another index, build the index again"
                )
