"""`piro evaluate RUN --task open-set`: the engineer's protocol, measured on a split's objects.

The gallery is what `piro index build RUN` holds (the objects the run trained on), built in memory; the split's
objects (the run's validation objects, or the data file's test split) are enrolled and queried by the open-set
protocol of piro_cli.inference.calibration, through the index's own enrolment and scoring. Reported per
query-view count Q, pooled over the draws, in percent: closed-set rank-1 identification of the enrolled half,
the equal-error rate, and DIR@FAR 1% and 5% (thresholds chosen on these same impostor queries: the rates a
calibrated threshold can reach, not what a threshold chosen elsewhere gives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from piro_cli.errors import PiroError
from piro_cli.inference.calibration import OpenSetProtocol, check_protocol, embed_held_out, open_set_scores
from piro_cli.inference.index import trained_gallery
from piro_cli.inference.run import LoadedRun
from piro_cli.reporting import Reporter, SilentReporter

TASK = "open-set"


def parse_query_views(text: str | Sequence[int]) -> tuple[int, ...]:
    """'1,3' -> (1, 3); ValueError naming the bad item."""
    if not isinstance(text, str):
        return tuple(int(q) for q in text)
    counts = []
    for item in (part.strip() for part in text.split(",")):
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"{item!r} is not a count of photos (1, 2, 3, ...)")
        counts.append(int(item))
    if not counts:
        raise ValueError("give one or more counts of photos, e.g. 1,3")
    return tuple(sorted(set(counts)))


def evaluate_open_set(
    loaded: LoadedRun, store, probe_split: str, probe_rows, split: str, options: OpenSetProtocol, reporter: Reporter | None = None
) -> dict[str, dict]:
    """{"1": {rank1, eer, dir@far1, dir@far5, queries, settings}, ...}: one entry per query-view count."""
    reporter = reporter or SilentReporter()
    if options.draws < 1:
        raise PiroError(f"--draws {options.draws}: give at least 1")
    rows = np.arange(len(store.split(probe_split))) if probe_rows is None else np.asarray(probe_rows)
    options = options.for_views(store.num_views)
    check_protocol(len(rows), store.num_views, options.enrol_views, options.query_views, f"{loaded.name} {split}")
    held = embed_held_out(loaded, store, probe_split, rows, reporter)
    gallery = trained_gallery(loaded, store, reporter)
    reporter.info(f"{loaded.name}: open set, {len(held)} {split} objects against {len(gallery.objects)} gallery objects")
    scores = open_set_scores(gallery, loaded.model, loaded.device, held, options)
    return {
        str(q): {**pooled.summary(), "settings": {**options.settings(), "query_views": q, "objects": len(held)}}
        for q, pooled in scores.items()
    }
