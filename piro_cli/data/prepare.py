"""`piro prepare`: scan a raw dataset, load every object's views and write the HDF5 store."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from piro_cli.data.sources import get_source
from piro_cli.data.sources.base import ObjectRecord
from piro_cli.data.store import SPLITS, StoreWriter
from piro_cli.errors import BadItemError, DataError
from piro_cli.outputs import check_output_path

MAX_IMAGE_SIZE = 2048  # 12 views of 2048 x 2048 RGB are 150 MB an object; larger sides only exhaust memory
ProgressCallback = Callable[[int, int], None]
"""Called with (objects done, objects in total) after each object."""


@dataclass
class PrepareOptions:
    size: int = 224
    views: int | None = None  # keep this many views per object; None: every object must have the same count
    skip_bad: bool = False
    overwrite: bool = False
    compression: str = "none"
    workers: int = 2  # objects loaded concurrently (image decoding and rendering release the GIL)


@dataclass
class PrepareSummary:
    path: Path
    source: str
    layout: str
    num_views: int
    image_size: int
    categories: list[str]
    objects_per_split: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def default_output(source: str) -> Path:
    return Path("data") / f"{source}.h5"


def select_views(num_available: int, num_wanted: int) -> np.ndarray:
    """Evenly spaced view indices, in capture order: keeps the camera spacing of a turntable protocol."""
    return np.floor(np.arange(num_wanted) * num_available / num_wanted).astype(np.int64)


def prepare_dataset(
    source: str,
    raw_dir: Path | None,
    out: Path | None = None,
    options: PrepareOptions | None = None,
    source_options: dict | None = None,
    progress: ProgressCallback | None = None,
) -> PrepareSummary:
    """Build `out` (default ./data/<source>.h5) from a raw dataset. Raises DataError on bad input."""
    options = options or PrepareOptions()
    source_options = dict(source_options or {})
    out = check_output_path(out if out is not None else default_output(source), "--out", options.overwrite)
    if not 16 <= options.size <= MAX_IMAGE_SIZE:
        raise DataError(f"--size {options.size}: use 16 to {MAX_IMAGE_SIZE} pixels (the paper uses 224)")

    started = time.perf_counter()
    scan = get_source(source).scan(raw_dir, **source_options)
    records = [r for r in scan.records if r.split in SPLITS]
    if not records:
        raise DataError(f"{raw_dir}: found no objects for source '{source}'.{_layout_hint(source)}")

    warnings = _single_object_warnings(records)
    num_views = _decide_view_count(records, options.views)
    category_index = {name: i for i, name in enumerate(scan.categories)}
    creation_options = {
        "source": source,
        "raw_dir": str(raw_dir) if raw_dir is not None else None,
        "size": options.size,
        "views": options.views,
        "skip_bad": options.skip_bad,
        "compression": options.compression,
        **source_options,
    }

    skipped: list[tuple[str, str]] = []
    counts: Counter[str] = Counter()
    with StoreWriter(
        out,
        categories=scan.categories,
        num_views=num_views,
        image_size=options.size,
        source_dataset=source,
        creation_options=creation_options,
        compression=options.compression,
        overwrite=options.overwrite,
    ) as writer:
        loaded = _load_in_order(records, options.size, options.workers)
        for done, (record, result) in enumerate(loaded, start=1):
            try:
                images = _fit_views(record, result, num_views, options.views is not None)
            except BadItemError as exc:
                if not options.skip_bad:
                    raise
                skipped.append((exc.path, exc.reason))
            else:
                writer.append(record.split, images, category_index[record.category], record.name, record.source_path)
                counts[record.split] += 1
            if progress is not None:
                progress(done, len(records))
        if not counts:
            raise DataError(f"{raw_dir}: every object was skipped as unreadable; nothing to write")
        writer.commit()

    return PrepareSummary(
        path=out,
        source=source,
        layout=scan.description,
        num_views=num_views,
        image_size=options.size,
        categories=list(scan.categories),
        objects_per_split={s: counts[s] for s in SPLITS if counts[s]},
        skipped=skipped,
        warnings=warnings,
        seconds=time.perf_counter() - started,
    )


def _layout_hint(source: str) -> str:
    layout = get_source(source).expected_layout
    return f" Expected layout:\n{layout}" if layout else ""


def _single_object_warnings(records: list[ObjectRecord]) -> list[str]:
    per_split_category = Counter((r.split, r.category) for r in records)
    return [
        f"category '{category}' has a single object in the {split} split; training needs two objects of a category to form a pair"
        for (split, category), n in sorted(per_split_category.items())
        if n == 1
    ]


def _decide_view_count(records: list[ObjectRecord], wanted: int | None) -> int:
    """The store's views per object: `--views N`, or the count every listed object shares."""
    if wanted is not None:
        if wanted < 1:
            raise DataError(f"--views {wanted}: need at least one view per object")
        return wanted
    known = [r for r in records if r.num_views is not None]
    if not known:
        return 12  # mesh sources render the 12-view protocol
    counts = Counter(r.num_views for r in known)
    common, _ = counts.most_common(1)[0]
    odd = [r for r in known if r.num_views != common]
    if odd:
        first = odd[0]
        raise DataError(
            f"{first.source_path}: has {first.num_views} views, but {counts[common]} of {len(known)} objects have {common} "
            f"({len(odd)} objects differ). Pass --views N to keep N evenly spaced views of every object "
            f"(objects with fewer than N are errors, or skipped with --skip-bad)."
        )
    return common


def _fit_views(record: ObjectRecord, result: Future | np.ndarray, num_views: int, may_subsample: bool) -> np.ndarray:
    images = result.result() if isinstance(result, Future) else result
    have = images.shape[0]
    if have == num_views:
        return images
    if may_subsample and have > num_views:
        return images[select_views(have, num_views)]
    if may_subsample:
        raise BadItemError(
            record.source_path, f"has {have} views, expected {num_views} (--views {num_views})", fix="add views or lower --views"
        )
    raise BadItemError(
        record.source_path, f"has {have} views, expected {num_views}", fix="pass --views N to keep N views of every object"
    )


def _load_in_order(records: list[ObjectRecord], size: int, workers: int) -> Iterator[tuple[ObjectRecord, Future]]:
    """Load objects concurrently but yield them in order, with a bounded number in flight (bounded memory)."""
    window = max(1, workers) * 2
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[tuple[ObjectRecord, Future]] = []
        iterator: Iterable[ObjectRecord] = iter(records)
        try:
            for record in iterator:
                pending.append((record, pool.submit(record.load, size)))
                if len(pending) >= window:
                    yield pending.pop(0)
            while pending:
                yield pending.pop(0)
        finally:
            for _, future in pending:
                future.cancel()
