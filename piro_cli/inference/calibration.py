"""The open-set protocol an engineer meets, and the `unknown` threshold chosen on it.

`piro index calibrate` picks the index's thresholds with it; `piro evaluate --task open-set`
(piro_cli.evaluation.openset) reports its error rates. Both run the index's own enrolment and scoring
(GalleryIndex.with_enrolled, GalleryIndex.score): there is no second implementation of either.

Held-out objects (objects the index does not hold) play both roles. In each seeded draw they are split in half
at random (`numpy.random.default_rng(seed + draw).permutation`, the first ceil(n/2) enrolled):
- enrolled: each object of that half is enrolled from its first E views (`enrol_views`) as `piro index add`
  enrols photos: their single-view embeddings and the view-set embedding of the E views;
- never enrolled: the other half.
Queries of Q photos (`query_views`) come from the views not used to enrol (E .. V-1), of both halves: each
object's remaining views in a random order (`default_rng((seed, draw, Q))`), cut into floor((V - E) / Q)
disjoint groups of Q. Every query is scored against the index plus the draw's enrolled objects. Pooled over the
draws, with genuine queries those of enrolled objects and impostor queries those of never-enrolled ones:

    FAR(t) = share of impostor queries with score <= t   (an object that is not enrolled gets a name)
    FRR(t) = share of genuine queries with score > t     (an enrolled object is called unknown)
    rank-1 = share of genuine queries whose nearest object is their own (closed-set identification)
    EER    = the larger of FAR and FRR at the threshold that minimises it (equal-error rate)
    DIR@FAR x = share of genuine queries both accepted and named right at the largest threshold with FAR <= x
                (the open-set identification rate of face recognition)

Calibration picks, for each Q it can, the equal-error threshold (or, with `target_far`, the largest with FAR at
most that) and stores it with the impostor scores, from which `identify` reports the false-accept rate of an
answer's score (its confidence).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from piro_cli.errors import PiroError
from piro_cli.inference.cache import cached_features
from piro_cli.inference.index import MANIFEST, EnrolledEmbeddings, GalleryIndex, Queries, ScoringRule, commit_index
from piro_cli.inference.run import LoadedRun, group_rows
from piro_cli.models.embedding import embed_view_sets
from piro_cli.outputs import OutputLock
from piro_cli.reporting import Reporter, SilentReporter, stage_progress

DEFAULT_ENROL_VIEWS = 4
DEFAULT_QUERY_VIEWS = (1, 2, 3)
KEPT_IMPOSTOR_SCORES = 1000  # quantiles of the impostor scores kept in the index, for the false-accept rate of an answer


# ----------------------------------------------------------------------------- error rates


def rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at `threshold`."""
    far = float(np.mean(impostor <= threshold)) if len(impostor) else 0.0
    frr = float(np.mean(genuine > threshold)) if len(genuine) else 0.0
    return far, frr


def choose_threshold(genuine: np.ndarray, impostor: np.ndarray, target_far: float | None = None) -> float:
    """The equal-error threshold, or the largest with FAR <= `target_far`; candidates are midpoints between
    consecutive observed scores (and just below the smallest), so the rates at a threshold are exact."""
    values = np.unique(np.concatenate([genuine, impostor]).astype(np.float64))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    far = np.searchsorted(np.sort(impostor), candidates, side="right") / max(1, len(impostor))
    frr = 1.0 - np.searchsorted(np.sort(genuine), candidates, side="right") / max(1, len(genuine))
    if target_far is not None:
        allowed = np.flatnonzero(far <= target_far)
        return float(candidates[allowed[-1]]) if len(allowed) else float(candidates[0])
    worst = np.maximum(far, frr)
    best = np.flatnonzero(worst == worst.min())
    return float(candidates[best[len(best) // 2]])  # the middle of a flat optimum


@dataclass
class OpenSetScores:
    """The pooled queries of Q photos: each query's score, whether its object was enrolled and whether its
    nearest object is its own."""

    query_views: int
    score: np.ndarray
    enrolled: np.ndarray  # bool
    correct: np.ndarray  # bool; False for every never-enrolled query
    asked: np.ndarray  # (n,) object: the name of each query's own object
    answered: np.ndarray  # (n,) object: the name of the object ranked first for it

    @property
    def genuine(self) -> np.ndarray:
        return self.score[self.enrolled]

    @property
    def impostor(self) -> np.ndarray:
        return self.score[~self.enrolled]

    def rank1(self) -> float:
        return float(np.mean(self.correct[self.enrolled])) if self.enrolled.any() else float("nan")

    def eer(self) -> float:
        """The smallest rate r such that one threshold keeps both FAR and FRR at most r."""
        far, frr = rates(self.genuine, self.impostor, choose_threshold(self.genuine, self.impostor))
        return max(far, frr)

    def dir_at_far(self, far: float) -> float:
        threshold = choose_threshold(self.genuine, self.impostor, target_far=far)
        return float(np.mean(self.correct[self.enrolled] & (self.genuine <= threshold)))

    def lookalikes(self, threshold: float, most: int = 5) -> list[dict]:
        """The never-enrolled objects accepted at `threshold` and the objects they were taken for, the pairs with
        the most accepted queries first: where the false accepts come from (often a near-twin of an enrolled
        object, which no threshold separates at a low false-accept rate)."""
        accepted = ~self.enrolled & (self.score <= threshold)
        pairs: dict[tuple[str, str], int] = {}
        for asked, answered in zip(self.asked[accepted], self.answered[accepted], strict=True):
            pairs[(asked, answered)] = pairs.get((asked, answered), 0) + 1
        queries = {name: int(n) for name, n in zip(*np.unique(self.asked[~self.enrolled], return_counts=True), strict=True)}
        ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:most]
        return [{"object": a, "taken_for": b, "accepted": n, "queries": queries[a]} for (a, b), n in ranked]

    def summary(self) -> dict:
        """rank1, eer, dir@far1, dir@far5 in percent, and the query counts."""
        return {
            "rank1": 100 * self.rank1(),
            "eer": 100 * self.eer(),
            "dir@far1": 100 * self.dir_at_far(0.01),
            "dir@far5": 100 * self.dir_at_far(0.05),
            "queries": {"enrolled": int(self.enrolled.sum()), "never_enrolled": int((~self.enrolled).sum())},
        }


# ----------------------------------------------------------------------------- the protocol


@dataclass
class HeldOut:
    """Held-out objects, embedded once: backbone features of every view (the run's test-time flips included) and
    their single-view embeddings; view sets of any subset are embedded from the features (heads only)."""

    names: list[str]
    categories: list[str]  # each object's category name
    features: torch.Tensor  # (N, V, F)
    sv_cat: np.ndarray  # (N, V, Dc)
    sv_obj: np.ndarray  # (N, V, Do)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_views(self) -> int:
        return int(self.features.shape[1])


def embed_held_out(loaded: LoadedRun, store, split: str, rows: np.ndarray, reporter: Reporter | None = None) -> HeldOut:
    """Embed the given objects (rows of the data file's `split`) for the protocol."""
    reporter = reporter or SilentReporter()
    data = store.split(split)
    features = cached_features(
        loaded, store, split, rows, stage_progress(reporter, f"{loaded.name}: embedding {len(rows)} held-out objects")
    )
    sv_cat, sv_obj, _, _ = embed_view_sets(loaded.model, features, loaded.device)
    names = [data.object_names[int(r)] for r in rows]
    categories = [store.categories[int(data.category[int(r)])] for r in rows]
    return HeldOut(names, categories, features, sv_cat, sv_obj)


@dataclass(frozen=True)
class OpenSetProtocol:
    """The settings of the protocol (module docstring): photos to enrol from (None: DEFAULT_ENROL_VIEWS, or one less
    than the views an object has), query-view counts (None: DEFAULT_QUERY_VIEWS as far as the views left allow),
    seeded draws, and the index's scoring rule."""

    enrol_views: int | None = None
    query_views: tuple[int, ...] | None = None
    draws: int = 5
    seed: int = 0
    rule: ScoringRule = field(default_factory=ScoringRule)

    def for_views(self, views: int) -> OpenSetProtocol:
        """This protocol with its defaults filled in for objects of `views` views (checked by `check_protocol`)."""
        enrol = min(DEFAULT_ENROL_VIEWS, views - 1) if self.enrol_views is None else int(self.enrol_views)
        if self.query_views is None:  # the default counts that fit beside the enrolment views (at least 1)
            counts = tuple(q for q in DEFAULT_QUERY_VIEWS if enrol + q <= views) or (1,)
        else:
            counts = tuple(int(q) for q in self.query_views)
        return replace(self, enrol_views=enrol, query_views=counts)

    def settings(self) -> dict:
        """What a result records of the protocol."""
        return {"enrol_views": self.enrol_views, "draws": self.draws, "seed": self.seed, "scoring": self.rule.to_dict()}


def check_protocol(objects: int, views: int, enrol_views: int, query_views: Sequence[int], where: str) -> None:
    """One line for a protocol that `objects` held-out objects of `views` views cannot run."""
    if objects < 2:
        raise PiroError(
            f"{where}: {objects} held-out objects; the open-set protocol needs at least 2 (one enrolled, one not): "
            "train with --val-fraction, or use --split test on data with a test split"
        )
    if enrol_views < 1:
        raise PiroError(f"--enrol-views {enrol_views}: give at least 1")
    if not query_views or min(query_views) < 1:
        raise PiroError(f"--query-views {','.join(map(str, query_views))}: give counts of 1 or more")
    if enrol_views + max(query_views) > views:
        raise PiroError(
            f"--enrol-views {enrol_views} + --query-views {max(query_views)}: more than the {views} views an object of "
            f"{where} has; enrolment and queries use different views"
        )


def open_set_scores(
    gallery: GalleryIndex, model: torch.nn.Module, device: torch.device, held: HeldOut, protocol: OpenSetProtocol
) -> dict[int, OpenSetScores]:
    """The module docstring's protocol: per query-view count Q, the pooled scores of every draw."""
    n, v = len(held), held.num_views
    protocol = protocol.for_views(v)
    enrol_views, query_views, rule = protocol.enrol_views, protocol.query_views, protocol.rule
    pooled: dict[int, list[tuple[np.ndarray, ...]]] = {q: [] for q in query_views}
    held_names = np.array(held.names, dtype=object)
    _, _, set_cat, set_obj = embed_view_sets(model, held.features[:, :enrol_views], device)  # what `add` stores
    base = len(gallery.objects)
    for draw in range(protocol.draws):
        chosen = np.random.default_rng(protocol.seed + draw).permutation(n)[: (n + 1) // 2]
        position = np.full(n, -1, dtype=np.int64)  # where each held-out object lands in the draw's index; -1: not enrolled
        position[chosen] = base + np.arange(len(chosen))
        enrolled = gallery.with_enrolled(
            [
                EnrolledEmbeddings(held.names[o], held.categories[o], f"draw {draw}", held.sv_cat[o, :enrol_views],
                                   held.sv_obj[o, :enrol_views], set_cat[o], set_obj[o])
                for o in chosen
            ]
        )  # fmt: skip
        names = np.array([o.name for o in enrolled.objects], dtype=object)
        for q in query_views:
            owner, views = _query_groups(n, v, enrol_views, q, np.random.default_rng((protocol.seed, draw, q)))
            _, _, _, mv_obj = embed_view_sets(model, held.features[owner[:, None], views], device)
            queries = Queries(held.sv_cat[owner[:, None], views], held.sv_obj[owner[:, None], views], mv_obj)
            scores = enrolled.score(queries, rule, votes=False)  # the object decision only
            known = position[owner] >= 0
            correct = known & (scores.nearest == position[owner])
            pooled[q].append((scores.score, known, correct, held_names[owner], names[scores.nearest]))
    return {q: OpenSetScores(q, *(np.concatenate(column) for column in zip(*parts, strict=True))) for q, parts in pooled.items()}


def _query_groups(n: int, v: int, enrol_views: int, q: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(owner (m,), view indices (m, q)): each object's views after the enrolment ones, shuffled, in groups of q."""
    per_object = (v - enrol_views) // q
    remaining = np.arange(enrol_views, v)
    views = np.stack([rng.permutation(remaining)[: per_object * q].reshape(per_object, q) for _ in range(n)])
    return np.repeat(np.arange(n), per_object), views.reshape(n * per_object, q)


# ----------------------------------------------------------------------------- calibrating an index


@dataclass
class Threshold:
    """The threshold of one query-view count and its rates on the calibration queries."""

    photos: int
    score: float
    far: float
    frr: float
    wrong_object: float  # genuine queries accepted with another object's name
    genuine: np.ndarray = field(repr=False)
    impostor: np.ndarray = field(repr=False)
    lookalikes: list[dict] = field(default_factory=list)  # OpenSetScores.lookalikes at this threshold

    def record(self) -> dict:
        kept = np.sort(self.impostor)
        if len(kept) > KEPT_IMPOSTOR_SCORES:
            kept = np.quantile(kept, np.linspace(0, 1, KEPT_IMPOSTOR_SCORES))
        return {
            "score": round(float(self.score), 6),
            "far": round(self.far, 6),
            "frr": round(self.frr, 6),
            "wrong_object": round(self.wrong_object, 6),
            "genuine_queries": int(len(self.genuine)),
            "impostor_queries": int(len(self.impostor)),
            "impostor_scores": [round(float(s), 6) for s in kept],
            "lookalikes": self.lookalikes,
        }


@dataclass
class Calibration:
    thresholds: dict[int, Threshold]  # by query-view count
    rule: ScoringRule
    target: str  # "equal error" or "FAR <= x"
    objects: int = 0  # held-out objects
    draws: int = 0
    enrol_views: int = DEFAULT_ENROL_VIEWS
    index: str = ""
    split: str = "val"
    excluded: list[str] = field(default_factory=list)  # held-out objects the index already holds: not used
    seconds: float = 0.0

    @property
    def single(self) -> Threshold:
        """The one-photo threshold (what the plot and the summary line show)."""
        return self.thresholds[min(self.thresholds)]

    def record(self) -> dict:
        return {
            "rule": self.target,
            "scoring": self.rule.to_dict(),
            "by_photos": {str(q): t.record() for q, t in sorted(self.thresholds.items())},
            "enrol_views": self.enrol_views,
            "objects": self.objects,
            "draws": self.draws,
            "split": self.split,
            "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def calibrate_index(
    index: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "val",
    protocol: OpenSetProtocol | None = None,
    target_far: float | None = None,
    objects: Sequence[str] | None = None,
    run: str | Path | None = None,
    device: str | None = None,
    save: bool = True,
    reporter: Reporter | None = None,
) -> Calibration:
    """Pick the index's `unknown` thresholds on held-out objects (module docstring) and, with `save`, store them
    with the scoring rule. protocol: default OpenSetProtocol() (4 enrolment photos, or V - 1 for objects of fewer
    views; 1, 2 and 3 photos per query as far as the views left allow; 5 draws; the default scoring rule).
    `objects`: use only the held-out objects of these names."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    protocol = protocol or OpenSetProtocol()
    if protocol.draws < 1:
        raise PiroError(f"--draws {protocol.draws}: give at least 1")
    if target_far is not None and not 0 <= target_far < 1:
        raise PiroError(f"--far {target_far}: give a rate from 0 to 1 (e.g. 0.05)")
    if split not in ("train", "val", "test"):
        raise PiroError(f"--split {split!r}: choose val, test or train (objects the index was not built from)")
    gallery = GalleryIndex(index)
    if not gallery.objects:
        raise PiroError(f"{gallery.path}: holds no objects; build it with `piro index build` first")
    loaded = gallery.load_run(run, device)
    store = loaded.open_data(data)
    try:
        source_split, rows = group_rows(loaded.checkpoint, store, split)
    except PiroError as exc:
        if split != "val" or "no validation objects" not in str(exc) or "test" not in store.splits:
            raise
        raise PiroError(f"{exc}; or calibrate on the data's test objects: --split test") from None
    names = store.split(source_split).object_names
    rows = np.arange(len(names)) if rows is None else rows
    enrolled = {o.name for o in gallery.objects}
    excluded = [names[int(r)] for r in rows if names[int(r)] in enrolled]
    rows = np.array([r for r in rows if names[int(r)] not in enrolled], dtype=np.int64)
    if objects is not None:
        wanted = set(objects)
        rows = np.array([r for r in rows if names[int(r)] in wanted], dtype=np.int64)
    if len(rows) < 2:
        raise PiroError(
            f"{store.path} {split}: {len(rows)} objects the index does not already hold; calibration needs at least 2 "
            "held-out objects (train with --val-fraction, or pass --split test)"
        )
    if store.num_views < 2:
        raise PiroError(f"{store.path}: one view per object; calibration needs at least 2 (some to enrol, some to query)")
    protocol = protocol.for_views(store.num_views)
    check_protocol(len(rows), store.num_views, protocol.enrol_views, protocol.query_views, f"{store.path} {split}")
    held = embed_held_out(loaded, store, source_split, rows, reporter)
    scores = open_set_scores(gallery, loaded.model, loaded.device, held, protocol)
    thresholds = {}
    for q, pooled in scores.items():
        value = choose_threshold(pooled.genuine, pooled.impostor, target_far)
        far, frr = rates(pooled.genuine, pooled.impostor, value)
        accepted_wrong = ~pooled.correct[pooled.enrolled] & (pooled.genuine <= value)
        thresholds[q] = Threshold(
            q, value, far, frr, float(np.mean(accepted_wrong)), pooled.genuine, pooled.impostor, pooled.lookalikes(value)
        )
    result = Calibration(
        thresholds, protocol.rule, "equal error" if target_far is None else f"FAR <= {target_far}", len(rows),
        protocol.draws, protocol.enrol_views, gallery.path.name, split, excluded,
    )  # fmt: skip
    if save:
        with OutputLock(gallery.path, folder=True):
            current = GalleryIndex(index)  # under the lock: keep what another writer committed
            manifest = current.manifest
            manifest["threshold"] = result.record()
            commit_index(current.path, manifest)
        reporter.info(f"thresholds written to {gallery.path / MANIFEST}")
    result.seconds = time.perf_counter() - started
    return result
