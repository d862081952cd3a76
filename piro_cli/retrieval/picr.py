"""The eight pose-invariant classification and retrieval (PICR) tasks, METHOD.md section 5.

Gallery = training objects, probes = test (or validation) objects. Classification reports accuracy,
retrieval mean average precision (mAP), both in percent. V views per object; "views" below are the
single-view embeddings, "c_mv" / "o_mv" the multi-view ones.

| task | queries | ranked against | correct / relevant |
|---|---|---|---|
| sv-category-recognition | every probe view (category space) | every gallery view | majority of the 10 nearest |
| mv-category-recognition | every probe c_mv | every gallery c_mv | majority of the 10 nearest |
| sv-object-recognition | every probe view (object space) | every probe view, first hit dropped | nearest left is a view of the same object |
| mv-object-recognition | o_mv of each probe's views [V//2:] | o_mv of each probe's views [:V//2] | nearest is the same object |
| sv-category-retrieval | every probe view | every probe view | same category |
| mv-category-retrieval | every probe c_mv | every probe c_mv | same category |
| sv-object-retrieval | every probe view | every probe view, first hit dropped | the other views of the same object |
| mv-object-retrieval | as mv-object-recognition | as mv-object-recognition | the same object |

Protocols. The default is the authors' released evaluation (utils/InferenceUtility_large.py), exactly:
category retrievals rank the query itself too (it is one of its own relevant items, normally at rank 1);
the SV object tasks rank every probe view, the query included, and drop the first hit (`predict_sv`,
`'other_view'`): that is the query itself unless another view lies at the same distance with a lower index
(an exact duplicate); the MV object tasks use views [:V//2] as the gallery and [V//2:] as the queries (for
an odd V the queries have one view more). `strict=True` leaves the query itself out of every ranking
instead, which changes the two category retrievals, and the SV object tasks where duplicates are concerned.

Rules shared by every task (piro_cli.retrieval.metrics): Euclidean distance; equal distances ranked by
item index (gallery/probe order, views in capture order), as faiss's exact index orders them; a query with
no relevant item (an object with one view, or with `strict` a category with one object) has AP 0 and still
counts in the mean. A 10-NN vote tie goes to the smallest tied category index, as the released
`argmax(bincount(...))` decides; `tie_break="nearest"` gives it to the tied category whose nearest member
ranks first, which depends on the ranking only, so the result does not change when the categories are
renumbered. The two differ only on exact vote ties.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from piro_cli.errors import DataError
from piro_cli.models.embedding import EmbeddingSet
from piro_cli.retrieval.metrics import rank
from piro_cli.retrieval.search import KNN_VOTES, TIE_BREAKS, vote
from piro_cli.retrieval.tasks import SHORT_NAMES, TASKS  # noqa: E402,F401 (re-exported)

# What each task reads: (gallery fields, probe fields).
TASK_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sv-category-recognition": (("sv_cat",), ("sv_cat",)),
    "mv-category-recognition": (("mv_cat",), ("mv_cat",)),
    "sv-object-recognition": ((), ("sv_obj",)),
    "mv-object-recognition": ((), ("mv_obj_first", "mv_obj_last")),
    "sv-category-retrieval": ((), ("sv_cat",)),
    "mv-category-retrieval": ((), ("mv_cat",)),
    "sv-object-retrieval": ((), ("sv_obj",)),
    "mv-object-retrieval": ((), ("mv_obj_first", "mv_obj_last")),
}

StageProgress = Callable[[str, int, int], None]


@dataclass
class PicrRun:
    """Task values in percent (TASKS order), queries per task, and wall time per computation step."""

    values: dict[str, float] = field(default_factory=dict)
    num_queries: dict[str, int] = field(default_factory=dict)
    steps: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def seconds(self, task: str) -> float:
        """Wall time of the step that computed `task` (shared steps are counted once for each of their tasks)."""
        return next(s for tasks, s in self.steps if task in tasks)


def parse_tasks(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """Task names (comma-separated or a list; 'all' or None for all eight) in TASKS order; ValueError names the bad one."""
    if names is None:
        return TASKS
    items = [n.strip() for part in ([names] if isinstance(names, str) else names) for n in part.split(",") if n.strip()]
    if not items or "all" in items:
        return TASKS
    unknown = [n for n in items if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; tasks are {', '.join(TASKS)} or all")
    return tuple(t for t in TASKS if t in items)


def needs_gallery(tasks: Sequence[str]) -> bool:
    return any(TASK_FIELDS[t][0] for t in tasks)


def required_fields(tasks: Sequence[str]) -> tuple[set[str], set[str]]:
    """(gallery fields, probe fields) the given tasks read."""
    gallery: set[str] = set()
    probes: set[str] = set()
    for task in tasks:
        gallery.update(TASK_FIELDS[task][0])
        probes.update(TASK_FIELDS[task][1])
    return gallery, probes


def evaluate_picr(
    gallery: EmbeddingSet | None,
    probes: EmbeddingSet,
    tasks: Sequence[str] = TASKS,
    *,
    strict: bool = False,
    tie_break: str = "smallest",
    device: str | torch.device | None = None,
    progress: StageProgress | None = None,
    backend: str | None = None,
) -> dict[str, float]:
    """The requested PICR tasks, in percent, in `TASKS` order (see the module docstring for the protocol)."""
    return run_picr(
        gallery, probes, tasks, strict=strict, tie_break=tie_break, device=device, progress=progress, backend=backend
    ).values


def run_picr(
    gallery: EmbeddingSet | None,
    probes: EmbeddingSet,
    tasks: Sequence[str] = TASKS,
    *,
    strict: bool = False,
    tie_break: str = "smallest",
    device: str | torch.device | None = None,
    progress: StageProgress | None = None,
    backend: str | None = None,
) -> PicrRun:
    """Like `evaluate_picr`, with the number of queries per task and the wall time of each step."""
    tasks = parse_tasks(list(tasks))
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie break {tie_break!r}; choose one of {', '.join(TIE_BREAKS)}")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _check_inputs(gallery, probes, tasks)
    run = PicrRun()
    n = len(probes)
    labels = probes.labels.long().cpu()
    objects = torch.arange(n)

    def step(names: tuple[str, ...], stage: str, fn) -> None:
        started = time.perf_counter()
        report = (lambda done, total: progress(stage, done, total)) if progress is not None else None
        for name, (value, count) in zip(names, fn(report), strict=True):
            run.values[name] = value
            run.num_queries[name] = count
        run.steps.append((names, time.perf_counter() - started))

    def on(t: torch.Tensor) -> torch.Tensor:
        return t.to(device)

    wanted = set(tasks)
    if "sv-category-recognition" in wanted:

        def sv_cat_rec(report):
            v, g = probes.sv_cat.shape[1], gallery.sv_cat.shape[1]
            q_labels = labels.repeat_interleave(v)
            result = rank(on(probes.sv_cat.flatten(0, 1)), on(gallery.sv_cat.flatten(0, 1)), k=KNN_VOTES, backend=backend,
                          progress=report)  # fmt: skip
            return [_vote_accuracy(result.neighbours, gallery.labels.long().cpu().repeat_interleave(g), q_labels, tie_break)]

        step(("sv-category-recognition",), "SV category recognition", sv_cat_rec)
    if "mv-category-recognition" in wanted:

        def mv_cat_rec(report):
            result = rank(on(probes.mv_cat), on(gallery.mv_cat), k=KNN_VOTES, backend=backend, progress=report)
            return [_vote_accuracy(result.neighbours, gallery.labels.long().cpu(), labels, tie_break)]

        step(("mv-category-recognition",), "MV category recognition", mv_cat_rec)
    sv_obj_tasks = tuple(t for t in ("sv-object-recognition", "sv-object-retrieval") if t in wanted)
    if sv_obj_tasks:

        def sv_obj(report):
            v = probes.sv_obj.shape[1]
            ids = objects.repeat_interleave(v)
            result = rank(on(probes.sv_obj.flatten(0, 1)), None, k=1 if "sv-object-recognition" in wanted else 0,
                          exclude_self=strict, drop_first=not strict,
                          query_ids=ids if "sv-object-retrieval" in wanted else None, backend=backend,
                          progress=report)  # fmt: skip
            return _object_outputs(sv_obj_tasks, result, ids, ids)

        step(sv_obj_tasks, "SV object " + " + ".join(t.split("-")[-1] for t in sv_obj_tasks), sv_obj)
    mv_obj_tasks = tuple(t for t in ("mv-object-recognition", "mv-object-retrieval") if t in wanted)
    if mv_obj_tasks:

        def mv_obj(report):
            result = rank(on(probes.mv_obj_last), on(probes.mv_obj_first),
                          k=1 if "mv-object-recognition" in wanted else 0,
                          query_ids=objects if "mv-object-retrieval" in wanted else None, item_ids=objects,
                          backend=backend, progress=report)  # fmt: skip
            return _object_outputs(mv_obj_tasks, result, objects, objects)

        step(mv_obj_tasks, "MV object " + " + ".join(t.split("-")[-1] for t in mv_obj_tasks), mv_obj)
    if "sv-category-retrieval" in wanted:

        def sv_cat_ret(report):
            v = probes.sv_cat.shape[1]
            q_labels = labels.repeat_interleave(v)
            result = rank(on(probes.sv_cat.flatten(0, 1)), None, query_ids=q_labels, exclude_self=strict, backend=backend,
                          progress=report)  # fmt: skip
            return [_map(result.average_precision)]

        step(("sv-category-retrieval",), "SV category retrieval", sv_cat_ret)
    if "mv-category-retrieval" in wanted:

        def mv_cat_ret(report):
            result = rank(on(probes.mv_cat), None, query_ids=labels, exclude_self=strict, backend=backend, progress=report)
            return [_map(result.average_precision)]

        step(("mv-category-retrieval",), "MV category retrieval", mv_cat_ret)
    run.values = {t: run.values[t] for t in TASKS if t in run.values}
    run.num_queries = {t: run.num_queries[t] for t in TASKS if t in run.num_queries}
    return run


def _vote_accuracy(
    neighbours: torch.Tensor, item_labels: torch.Tensor, query_labels: torch.Tensor, tie_break: str
) -> tuple[float, int]:
    predicted = vote(item_labels[neighbours], tie_break)
    return _percent((predicted == query_labels).double()), len(query_labels)


def _object_outputs(tasks, result, query_ids, item_ids) -> list[tuple[float, int]]:
    out = []
    for task in tasks:
        if task.endswith("recognition"):
            if result.neighbours.shape[1] == 0:  # a single probe view: nothing else to find
                out.append((0.0, len(query_ids)))
            else:
                out.append((_percent((item_ids[result.neighbours[:, 0]] == query_ids).double()), len(query_ids)))
        else:
            out.append(_map(result.average_precision))
    return out


def _map(ap: torch.Tensor) -> tuple[float, int]:
    return _percent(ap), len(ap)


def _percent(values: torch.Tensor) -> float:
    return 100.0 * float(values.mean()) if len(values) else float("nan")


def _check_inputs(gallery: EmbeddingSet | None, probes: EmbeddingSet, tasks: Sequence[str]) -> None:
    gallery_fields, probe_fields = required_fields(tasks)
    if gallery_fields and gallery is None:
        raise DataError(f"{', '.join(t for t in tasks if TASK_FIELDS[t][0])} need gallery (train) embeddings")
    for owner, es, names in (("gallery", gallery, gallery_fields), ("probe", probes, probe_fields)):
        for name in sorted(names):
            tensor = getattr(es, name)
            if tensor is None:
                raise DataError(
                    f"the {owner} embeddings lack '{name}', which {', '.join(t for t in tasks if name in sum(TASK_FIELDS[t], ()))} need"
                )
            if len(tensor) != len(es.labels):
                raise DataError(f"the {owner} '{name}' embeddings have {len(tensor)} rows for {len(es.labels)} labels")
            if not _all_finite(tensor):
                raise DataError(
                    f"the {owner} '{name}' embeddings contain NaN or infinite values; the model diverged or the file is damaged"
                )
    for name in gallery_fields:
        if getattr(gallery, name).shape[-1] != getattr(probes, name).shape[-1]:
            raise DataError(f"gallery and probe '{name}' embeddings have different dimensions")


def _all_finite(tensor: torch.Tensor, block: int = 1 << 22) -> bool:
    """No NaN or infinity; checked in blocks, since torch.isfinite of a whole gallery needs several copies of it."""
    flat = tensor.reshape(-1)
    return all(bool(torch.isfinite(flat[start : start + block]).all()) for start in range(0, len(flat), block))
