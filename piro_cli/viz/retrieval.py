"""`--retrieval`: a few test queries and what each space retrieves for them.

Queries: `--queries N` test views, drawn with `--seed` (N different objects, one random view each; the
same seed picks the same views for every run that shares the test objects). Gallery: every other test
view (the query's own view is left out; the other views of its object stay in). For each query and each
run two rows are drawn, its top-k nearest views (Euclidean distance, ties by gallery order):

- object space: a hit is correct (green frame) when it is a view of the query's object, else red;
- category space: correct when it shows an object of the query's category, else red.

A single-space run ranks with its one embedding in both rows, judged once by object and once by category.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from piro_cli.errors import PiroError
from piro_cli.viz.embeddings import ObjectEmbeddings, PlotRun
from piro_cli.viz.style import CORRECT, QUERY, WRONG, new_figure, show_image

CELL_INCHES = (1.3, 1.6)  # one thumbnail with its two-line caption
QUERY_WIDTH = 1.5  # query column, in cells
LABEL_INCHES = 1.6  # column of row labels (run, space)
GROUP_GAP_INCHES = 0.35  # between queries
TITLE_INCHES = 0.9


@dataclass
class Hit:
    row: int  # test object (position in PlotRun.indices)
    view: int
    distance: float
    correct: bool


@dataclass
class RetrievalRow:
    run: str
    space: str  # "object" or "category"
    label: str  # row label: run and space
    hits: list[Hit]


def pick_queries(run: PlotRun, count: int, seed: int) -> list[tuple[int, int]]:
    """`count` (test object, view) pairs, different objects, seeded."""
    if count < 1:
        raise PiroError(f"--queries {count}: must be at least 1")
    rng = np.random.default_rng(seed)
    n, views = len(run.indices), run.store.num_views
    rows = rng.permutation(n)  # all of them: asking for fewer queries gives a prefix of the same list
    picks = rng.integers(0, views, size=n)
    return [(int(r), int(v)) for r, v in zip(rows[:count], picks[:count], strict=True)]


def retrieve(emb: ObjectEmbeddings, query: tuple[int, int], space: str, top_k: int) -> list[Hit]:
    """The top-k other test views nearest to the query view in `space` ('object' or 'category')."""
    table = emb.sv_obj if space == "object" else emb.sv_cat  # (N, V, D), rows = all test objects in order
    n, views = table.shape[:2]
    flat = table.reshape(n * views, -1)
    query_index = int(np.flatnonzero(emb.rows == query[0])[0]) * views + query[1]
    distances = np.linalg.norm(flat - flat[query_index], axis=1)
    distances[query_index] = np.inf
    order = np.argsort(distances, kind="stable")[: min(top_k, n * views - 1)]
    owner_row = emb.rows[order // views]
    if space == "object":
        correct = owner_row == query[0]
    else:
        labels = dict(zip(emb.rows.tolist(), emb.labels.tolist(), strict=True))
        correct = np.array([labels[int(r)] == labels[query[0]] for r in owner_row])
    return [Hit(int(r), int(i % views), float(distances[i]), bool(c)) for r, i, c in zip(owner_row, order, correct, strict=True)]


def retrieval_rows(run: PlotRun, emb: ObjectEmbeddings, query: tuple[int, int], top_k: int) -> list[RetrievalRow]:
    rows = []
    for space in ("object", "category"):
        if run.dual:
            label = f"{run.name}\n{space} space\n(correct: same {space})"
        else:
            label = f"{run.name}\nsingle space\n(correct: same {space})"
        rows.append(RetrievalRow(run.name, space, label, retrieve(emb, query, space, top_k)))
    return rows


def figure_inches(num_queries: int, num_runs: int, top_k: int) -> tuple[float, float]:
    width = CELL_INCHES[0] * (QUERY_WIDTH + top_k) + LABEL_INCHES + 0.3
    height = num_queries * (2 * num_runs * CELL_INCHES[1] + GROUP_GAP_INCHES) + TITLE_INCHES
    return width, height


def plot_retrieval(runs: Sequence[PlotRun], queries: Sequence[tuple[int, int]], top_k: int, seed: int) -> Figure:
    """One block per query: the query view (blue) on the left, then per run an object-space and a category-space row."""
    if top_k < 1:
        raise PiroError(f"--top-k {top_k}: must be at least 1")
    reference = runs[0]
    embeddings = {run.name: run.embed(range(len(run.indices))) for run in runs}
    width, height = figure_inches(len(queries), len(runs), top_k)
    fig = new_figure(width, height)
    fig.suptitle(
        f"Top-{top_k} retrieval among the other test views (seed {seed}); frames: green correct, red wrong\n"
        f"test views: {reference.test_source}",
        fontsize=10, y=1 - 0.12 / height, va="top",
    )  # fmt: skip
    outer = fig.add_gridspec(
        len(queries), 1, left=0.15 / width, right=1 - 0.15 / width, bottom=0.05 / height, top=1 - TITLE_INCHES / height,
        hspace=GROUP_GAP_INCHES / (2 * len(runs) * CELL_INCHES[1]),
    )  # fmt: skip
    ratios = [QUERY_WIDTH * CELL_INCHES[0], LABEL_INCHES] + [CELL_INCHES[0]] * top_k
    for q, (row, view) in enumerate(queries):
        if q > 0:  # a rule between queries
            y = outer[q - 1].get_position(fig).y0 - 0.08 / height
            fig.add_artist(Line2D([0.15 / width, 1 - 0.15 / width], [y, y], color="0.7", linewidth=1.0))
        inner = outer[q].subgridspec(2 * len(runs), 2 + top_k, width_ratios=ratios, wspace=0.08, hspace=0.35)
        ax = fig.add_subplot(inner[:, 0])
        show_image(ax, reference.views(row)[view], frame=QUERY, width=4)
        category = reference.categories[int(reference.labels[row])]
        ax.set_title(f"query {q + 1}\n{_short(reference.object_name(row), 22)}\n{category}, view {view + 1}", fontsize=8)
        line = 0
        for run in runs:
            if run.object_name(row) != reference.object_name(row):
                raise PiroError(
                    f"runs {reference.name} and {run.name} have different test objects; draw --retrieval for one run at a time"
                )
            for result in retrieval_rows(run, embeddings[run.name], (row, view), top_k):
                label_ax = fig.add_subplot(inner[line, 1])
                label_ax.axis("off")
                label_ax.text(0.95, 0.5, result.label, ha="right", va="center", fontsize=8, transform=label_ax.transAxes)
                for k, hit in enumerate(result.hits):
                    hit_ax = fig.add_subplot(inner[line, 2 + k])
                    show_image(hit_ax, run.views(hit.row)[hit.view], frame=CORRECT if hit.correct else WRONG)
                    hit_category = run.categories[int(run.labels[hit.row])]
                    hit_ax.set_title(f"{k + 1}. {_short(run.object_name(hit.row), 20)}\n{_short(hit_category, 14)}, d={hit.distance:.2f}",
                                     fontsize=6.5, pad=2)  # fmt: skip
                line += 1
    return fig


def _short(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
