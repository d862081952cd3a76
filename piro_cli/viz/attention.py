"""`--attention`: the multi-view attention weights of one test object's view set, beside its views.

The object is drawn with `--seed` (the same object as the first `--retrieval` query). For each run and
each attention layer (dual: A_obj and A_cat; single space: its one layer) a V x V heatmap is drawn with the
object's views along both edges: row i holds the softmax weights with which view i attends to every view
of the set (each row sums to 1; uniform attention is 1/V everywhere). All heatmaps share one colour scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from piro_cli.errors import PiroError
from piro_cli.viz.embeddings import PlotRun, StageProgress
from piro_cli.viz.style import new_figure, show_image

CELL_INCHES = 0.6  # one thumbnail / heatmap cell
GAP_INCHES = 0.5  # between panels
COLORBAR_INCHES = 1.2
TITLE_INCHES = 0.8
ANNOTATE_MAX_VIEWS = 12  # print the weight in each cell up to this many views


def panels_of(run: PlotRun, row: int, progress: StageProgress | None = None) -> list[tuple[str, np.ndarray]]:
    """(title, (V, V) weights) of each attention layer of the run, for test object `row`."""
    emb = run.embed([row], progress)
    if run.dual:
        return [
            (f"{run.name} (dual): object attention A_obj", emb.attn_obj[0]),
            (f"{run.name} (dual): category attention A_cat", emb.attn_cat[0]),
        ]
    if run.model.config.aggregation == "mean":  # the PIEs baselines: no attention layer, uniform by construction
        return [(f"{run.name} (single space): average pooling, no attention layer", emb.attn_obj[0])]
    return [(f"{run.name} (single space): attention A", emb.attn_obj[0])]


def figure_inches(views: int, panels_per_row: int, rows: int) -> tuple[float, float]:
    panel = (views + 1) * CELL_INCHES
    return panels_per_row * (panel + GAP_INCHES) + COLORBAR_INCHES, rows * (panel + GAP_INCHES) + TITLE_INCHES


def plot_attention(runs: Sequence[PlotRun], row: int, progress: StageProgress | None = None) -> Figure:
    """One row of heatmaps per run."""
    reference = runs[0]
    for run in runs[1:]:
        if run.object_name(row) != reference.object_name(row):
            raise PiroError(
                f"runs {reference.name} and {run.name} have different test objects; draw --attention for one run at a time"
            )
    views = reference.views(row)
    v = len(views)
    rows = [panels_of(run, row, progress) for run in runs]
    per_row = max(len(r) for r in rows)
    width, height = figure_inches(v, per_row, len(rows))
    fig = new_figure(width, height)
    category = reference.categories[int(reference.labels[row])]
    fig.suptitle(
        f"Multi-view attention of '{reference.object_name(row)}' ({category}), {v} views\n"
        f"row i: how much view i attends to each view (rows sum to 1; uniform = 1/{v} = {1 / v:.3f})",
        fontsize=10, y=1 - 0.1 / height, va="top",
    )  # fmt: skip
    vmax = max(float(w.max()) for r in rows for _, w in r)
    norm = Normalize(vmin=0.0, vmax=max(vmax, 1e-6))
    panel = (v + 1) * CELL_INCHES
    image = None
    for i, panels in enumerate(rows):
        for j, (title, weights) in enumerate(panels):
            left = (GAP_INCHES / 2 + j * (panel + GAP_INCHES)) / width
            bottom = (height - TITLE_INCHES - (i + 1) * (panel + GAP_INCHES) + GAP_INCHES / 4) / height
            grid = fig.add_gridspec(v + 1, v + 1, left=left, right=left + panel / width, bottom=bottom,
                                    top=bottom + panel / height, wspace=0.04, hspace=0.04)  # fmt: skip
            for k in range(v):
                show_image(fig.add_subplot(grid[0, k + 1]), views[k])
                left_ax = fig.add_subplot(grid[k + 1, 0])
                show_image(left_ax, views[k])
                left_ax.set_ylabel(str(k + 1), rotation=0, fontsize=7, labelpad=8, va="center")
            heat = fig.add_subplot(grid[1:, 1:])
            image = heat.imshow(weights, cmap="viridis", norm=norm, interpolation="nearest", aspect="auto")
            heat.set_xticks(range(v), [str(k + 1) for k in range(v)], fontsize=7)
            heat.set_yticks([])
            heat.tick_params(length=0)
            if v <= ANNOTATE_MAX_VIEWS:
                for a in range(v):
                    for b in range(v):
                        value = float(weights[a, b])
                        colour = "black" if norm(value) > 0.6 else "white"
                        heat.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=6 if v > 8 else 7, color=colour)
            fig.text(left + panel / (2 * width), bottom + (panel + 0.08) / height, title, ha="center", va="bottom", fontsize=9)
    colorbar_ax = fig.add_axes((1 - (COLORBAR_INCHES - 0.1) / width, 0.15, 0.18 / width, 0.6))
    fig.colorbar(image, cax=colorbar_ax, label="attention weight")
    return fig
